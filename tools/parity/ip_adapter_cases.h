#pragma once
/// The IP-Adapter component cases of manifest_control.json (README_control.md): `ip_adapter_clip_image_processor`
/// (CLIPImageProcessor on uint8 images: the uint8 resize + crop exactly, pixel_values), `ip_adapter_image_encoder`
/// (CLIPVisionModelWithProjection: image_embeds, last / penultimate / embedding hidden states) and
/// `ip_adapter_{sd,plus_sd,sdxl}_image_proj` (the image projection loaded from the original-layout file). The
/// `*_unet` and pipeline cases need the UNet's IP attention processors and are not run here.
namespace tessera {

void register_ip_adapter_case_runners();

}  // namespace tessera
