# tessera_torch_pch(target): precompile the LibTorch headers the target uses.
function(tessera_torch_pch target)
  if(TESSERA_USE_PCH)
    target_precompile_headers(${target} PRIVATE <ATen/ATen.h> <vector> <string> <map> <memory>)
  endif()
endfunction()

function(tessera_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()
