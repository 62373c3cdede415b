# Third-party packages, all from Debian bookworm.
find_package(Torch REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(PNG REQUIRED)
find_package(JPEG REQUIRED)  # libjpeg-turbo (libjpeg62-turbo-dev)
find_package(Threads REQUIRED)
# Debian's TorchConfig puts -D_GLIBCXX_USE_CXX11_ABI on the torch target; nothing else to add.
