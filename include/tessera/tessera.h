/*
 * Tessera's C API (C99): run diffusion recipes from C and from any language with a C FFI (Python's ctypes,
 * Go's cgo, Rust, C#, Swift). Opaque handles, no C++ or LibTorch types; nothing throws across this boundary:
 * every call that can fail returns a tessera_status and leaves a message for tessera_last_error().
 *
 *   #include <tessera/tessera.h>
 *   tessera_context* ctx; tessera_pipeline* pipe; tessera_result* res;
 *   tessera_init_runtime(0);                                   // threads = cores, fastest BLAS kernels
 *   if (tessera_context_create(&ctx) ||
 *       tessera_pipeline_load(ctx, "recipes/sd/auto.yaml", &pipe) ||
 *       tessera_set_string(pipe, "prompt", "a red fox") || tessera_set_int(pipe, "seed", 42) ||
 *       tessera_run(pipe, NULL, NULL, &res) || tessera_result_write_png(res, 0, "fox.png"))
 *     fprintf(stderr, "%s\n", tessera_last_error());
 *
 * Link with -ltessera (pkg-config tessera, or CMake's find_package(Tessera) and target tessera::c).
 *
 * Threads: a pipeline and its results are used by one thread at a time. Different pipelines, from one context
 * or several, may run at the same time on different threads: pipelines of one context share its loaded models
 * (each loads once, even when two runs first need it at once) and each has its own scheduler and guider state.
 * tessera_load_plugin changes the context's registry: call it while no other thread uses that context.
 * tessera_last_error() is per thread.
 */
#ifndef TESSERA_TESSERA_H
#define TESSERA_TESSERA_H

#include <stddef.h>
#include <stdint.h>

#if defined(TESSERA_C_API_BUILD)
#define TESSERA_API __attribute__((visibility("default")))
#else
#define TESSERA_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Bumped whenever a declaration here changes incompatibly; compare with tessera_abi_version() at run time. */
#define TESSERA_ABI_VERSION 1

/** Every call's result. The values are the `tessera` command's exit codes (tessera --help lists them). */
typedef enum tessera_status {
  TESSERA_OK = 0,
  TESSERA_ERR_INTERNAL = 1,   /**< a bug in Tessera, or an invalid handle / NULL argument */
  TESSERA_ERR_USAGE = 2,      /**< an argument out of range (an image index, a negative size) */
  TESSERA_ERR_RECIPE = 3,     /**< the recipe file cannot be read or parsed */
  TESSERA_ERR_VALIDATION = 4, /**< the recipe parsed but the pipeline is inconsistent */
  TESSERA_ERR_INPUT = 5,      /**< an input has the wrong kind or value, or a required one is missing */
  TESSERA_ERR_PLUGIN = 6,     /**< a plugin cannot be loaded or registered */
  TESSERA_ERR_MODEL_LOAD = 7, /**< model files missing or malformed */
  TESSERA_ERR_CHECKPOINT = 8, /**< a checkpoint file missing, malformed or inconsistent */
  TESSERA_ERR_EXECUTION = 9,  /**< a block failed while running */
  TESSERA_ERR_CANCELLED = 10, /**< the progress callback asked to stop */
  TESSERA_ERR_OUTPUT = 11,    /**< an output could not be written, or the run produced no such output */
  TESSERA_ERR_SPEC = 12       /**< a block broke its own spec */
} tessera_status;

/** "0.1.0": the library's version. */
TESSERA_API const char* tessera_version(void);
/** TESSERA_ABI_VERSION of the library actually loaded. */
TESSERA_API int tessera_abi_version(void);
/** The message of the last call on this thread that failed (file, line or key, what was expected and found);
 *  "" when none has. Valid until the next failing call on this thread. */
TESSERA_API const char* tessera_last_error(void);
/** "input", "model_load", … for a status; "unknown" for other values. */
TESSERA_API const char* tessera_status_name(int status);

/** Opt-in process-wide set-up: LibTorch's intra-op threads (`threads` > 0 as given, 0 = one per core) and
 *  OpenBLAS's fastest kernels for this CPU (as the `tessera` command does at start). Call before the first run,
 *  while no other thread runs Tessera or LibTorch. Returns the thread count now in use. */
TESSERA_API int tessera_init_runtime(int threads);

/* ------------------------------------------------------------------------------------------------ contexts */

/** Registry (every built-in block, scheduler, guider and model) + the shared model cache. */
typedef struct tessera_context tessera_context;

TESSERA_API tessera_status tessera_context_create(tessera_context** out);
/** Frees the context handle. Pipelines loaded from it keep what they need (the registry, the loaded models)
 *  until they are freed themselves. NULL is ignored. */
TESSERA_API void tessera_context_free(tessera_context* ctx);
/** Loads a plugin (.so) into the context's registry: its blocks become usable by recipes loaded afterwards. */
TESSERA_API tessera_status tessera_load_plugin(tessera_context* ctx, const char* path);
/** Model weights the context holds loaded, in bytes (shared by every pipeline loaded from it). */
TESSERA_API int64_t tessera_context_loaded_bytes(const tessera_context* ctx);

/* ----------------------------------------------------------------------------------------------- pipelines */

/** A recipe built and statically validated (no weights read until the first run). */
typedef struct tessera_pipeline tessera_pipeline;

/** Loads and validates `recipe_path` (YAML). Errors name the recipe file, line and key. */
TESSERA_API tessera_status tessera_pipeline_load(tessera_context* ctx, const char* recipe_path,
                                                 tessera_pipeline** out);
TESSERA_API void tessera_pipeline_free(tessera_pipeline* pipe);

/* Inputs, by the names the recipe and its blocks declare (`tessera docs RECIPE` lists them). A value is checked
 * against the input's kind when set; it stays set for every later run until set again or cleared. */

/** Sets an input from text exactly as `tessera run --set name=text` does: numbers, lists ("1,2"), booleans,
 *  strings, and for image inputs a PNG or JPEG file path. */
TESSERA_API tessera_status tessera_set_string(tessera_pipeline* pipe, const char* name, const char* text);
TESSERA_API tessera_status tessera_set_int(tessera_pipeline* pipe, const char* name, int64_t value);
TESSERA_API tessera_status tessera_set_float(tessera_pipeline* pipe, const char* name, double value);
TESSERA_API tessera_status tessera_set_bool(tessera_pipeline* pipe, const char* name, int value);
/** An image input from a PNG or JPEG file. */
TESSERA_API tessera_status tessera_set_image_file(tessera_pipeline* pipe, const char* name, const char* path);
/** An image input from 8-bit RGB pixels, row-major, 3 bytes per pixel, `width * 3` bytes per row (copied). */
TESSERA_API tessera_status tessera_set_image_rgb8(tessera_pipeline* pipe, const char* name, const uint8_t* rgb,
                                                  int width, int height);
/** A tensor input from `ndim` sizes and prod(shape) float32 values in row-major order (copied). */
TESSERA_API tessera_status tessera_set_tensor_f32(tessera_pipeline* pipe, const char* name, const float* data,
                                                  const int64_t* shape, int ndim);
/** Forgets every input set so far (the recipe's defaults apply again). */
TESSERA_API tessera_status tessera_clear_inputs(tessera_pipeline* pipe);

/* ------------------------------------------------------------------------------------------------ running */

typedef enum tessera_event {
  TESSERA_EVENT_BLOCK_START = 0, /**< a leaf block starts: path = its dotted path */
  TESSERA_EVENT_BLOCK_END = 1,   /**< a leaf block finished */
  TESSERA_EVENT_STEP = 2         /**< a loop finished iteration `step` (0-based) of `total`: path = the loop */
} tessera_event;

typedef struct tessera_progress {
  int event;        /**< a tessera_event */
  const char* path; /**< valid during the callback only */
  int64_t step;     /**< TESSERA_EVENT_STEP: 0-based index; else -1 */
  int64_t total;    /**< TESSERA_EVENT_STEP: iterations of the loop; else -1 */
  double elapsed_s; /**< seconds since the run started */
} tessera_progress;

/** Called on the running thread at every leaf block boundary and every loop step. Return 0 to go on, anything
 *  else to cancel: the run stops at that boundary with TESSERA_ERR_CANCELLED and writes nothing. */
typedef int (*tessera_progress_fn)(const tessera_progress* progress, void* user_data);

/** A finished run's outputs. */
typedef struct tessera_result tessera_result;

/** Runs the pipeline on the inputs set so far (recipe defaults for the rest); `progress` may be NULL.
 *  On success *out holds the result (free it with tessera_result_free); on failure *out is NULL. */
TESSERA_API tessera_status tessera_run(tessera_pipeline* pipe, tessera_progress_fn progress, void* user_data,
                                       tessera_result** out);

/** Number of images in the result's `images` output (0 when it has none). */
TESSERA_API int tessera_result_image_count(const tessera_result* res);
/** Image `index` as 8-bit RGB (quantised as the PNG files are): *rgb points at height rows of width * 3 bytes,
 *  owned by the result and valid until tessera_result_free. */
TESSERA_API tessera_status tessera_result_image_rgb8(tessera_result* res, int index, const uint8_t** rgb,
                                                     int* width, int* height);
/** Writes image `index` as a PNG (atomically: an existing file survives any failure). */
TESSERA_API tessera_status tessera_result_write_png(const tessera_result* res, int index, const char* path);
/** Any tensor-valued output (e.g. "latents") as float32, row-major: *data and *shape are owned by the result. */
TESSERA_API tessera_status tessera_result_tensor_f32(tessera_result* res, const char* name, const float** data,
                                                     const int64_t** shape, int* ndim);
/** An integer output (e.g. "seed"). */
TESSERA_API tessera_status tessera_result_int(const tessera_result* res, const char* name, int64_t* value);
TESSERA_API void tessera_result_free(tessera_result* res);

#ifdef __cplusplus
}
#endif

#endif /* TESSERA_TESSERA_H */
