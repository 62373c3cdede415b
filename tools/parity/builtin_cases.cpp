// One place that knows every parity case runner, so a new runner is registered for all tools at once.
#include "tools/parity/controlnet_cases.h"
#include "tools/parity/flux_cases.h"
#include "tools/parity/format_cases.h"
#include "tools/parity/flux_pipeline_cases.h"
#include "tools/parity/guider_cases.h"
#include "tools/parity/ip_adapter_cases.h"
#include "tools/parity/parity.h"
#include "tools/parity/pipeline_cases.h"
#include "tools/parity/sd3_cases.h"
#include "tools/parity/sd3_pipeline_cases.h"
#include "tools/parity/t5_cases.h"
#include "tools/parity/text_cases.h"
#include "tools/parity/unet_cases.h"
#include "tools/parity/vae_cases.h"

namespace tessera {

void register_builtin_case_runners() {
  register_guider_case_runner();
  register_text_case_runners();
  register_t5_case_runners();  // after the CLIP runners: routes T5 tokenizer cases
  register_unet_case_runner();
  register_flux_case_runner();
  register_sd3_case_runner();
  register_vae_case_runner();
  register_pipeline_case_runner();
  register_sd3_pipeline_case_runner();
  register_flux_pipeline_case_runner();
  register_format_case_runners();
  register_controlnet_case_runners();
  register_ip_adapter_case_runners();
}

}  // namespace tessera
