/* A C application on the installed C API (tests/consumer/run.sh compiles it with cc and pkg-config tessera):
 * tiny-sd text2image, written as a PNG. usage: consumer_c RECIPE MODEL OUT.png */
#include <stdio.h>
#include <tessera/tessera.h>

int main(int argc, char** argv) {
  tessera_context* ctx = NULL; tessera_pipeline* pipe = NULL; tessera_result* res = NULL;
  if (argc != 4 || tessera_abi_version() != TESSERA_ABI_VERSION) return 2;
  tessera_init_runtime(0);
  int rc = tessera_context_create(&ctx) || tessera_pipeline_load(ctx, argv[1], &pipe) ||
           tessera_set_string(pipe, "model", argv[2]) || tessera_set_string(pipe, "prompt", "a red circle") ||
           tessera_set_int(pipe, "num_inference_steps", 2) || tessera_set_int(pipe, "seed", 7) ||
           tessera_run(pipe, NULL, NULL, &res) || tessera_result_write_png(res, 0, argv[3]);
  if (rc) fprintf(stderr, "tessera: %s\n", tessera_last_error());
  else printf("tessera %s: wrote %s (%d image)\n", tessera_version(), argv[3], tessera_result_image_count(res));
  tessera_result_free(res); tessera_pipeline_free(pipe); tessera_context_free(ctx);
  return rc;
}
