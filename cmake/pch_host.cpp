// The translation unit that builds the shared precompiled LibTorch header (cmake/TesseraHelpers.cmake).
