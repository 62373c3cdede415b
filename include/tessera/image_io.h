#pragma once
/// Image files: PNG output (8-bit sRGB RGB, text chunks, atomic write) and PNG or JPEG input (any PNG
/// colour type and bit depth; baseline or progressive JPEG), converted to RGB float in [0, 1]. Files read
/// are treated as untrusted.
///
///   write_png("out.png", images.pixels[0], {{"seed", "42"}, {"recipe", yaml_text}});
///   ImageBatch init = read_image("init.png");   // pixels [1, 3, H, W]
///   ImageBatch photo = read_image("photo.jpg"); // the format comes from the file's first bytes, not its name
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <tessera/value.h>

namespace tessera {

/// PNG text chunks as (keyword, value) pairs, in file order. Values are UTF-8.
using TextChunks = std::vector<std::pair<std::string, std::string>>;

/// Largest width or height read_image accepts (a decoded 16384² image is 3 GiB as float).
constexpr int64_t kMaxImageSide = 16384;

/// Writes one image [3, H, W] or [1, 3, H, W] (floating point, any device) as an 8-bit RGB PNG.
/// Pixels are quantised as diffusers' numpy_to_pil: round(clamp(x, 0, 1) * 255), half to even; NaN → 0.
/// Each text chunk is a tEXt chunk when its value is ASCII and an iTXt chunk (UTF-8) otherwise; keywords
/// must be 1–79 printable ASCII characters without leading, trailing or double spaces.
/// The file is written to a temporary file in the same directory, flushed to disk, then renamed over
/// `path`, so readers never see a partial PNG and an existing file survives any failure. Throws
/// OutputError naming `path` and the reason; on failure no file and no temporary file is left.
void write_png(const std::string& path, const at::Tensor& image, const TextChunks& text_chunks = {});

/// Writes a batch [B, 3, H, W]: `base.png` when B == 1, else `base-0.png` … `base-{B-1}.png`, the index
/// zero-padded to the width of B-1 so that names sort in batch order (B = 12: `base-00.png` … `base-11.png`).
/// A trailing ".png" on `base_path` is dropped first (`out.png` → `out.png` or `out-0.png`…).
/// Every image is encoded to its temporary file before any is renamed, so an encoding failure leaves no
/// file at all. Returns the paths written, in batch order. Throws OutputError as write_png.
std::vector<std::string> write_pngs(const std::string& base_path, const at::Tensor& images,
                                    const TextChunks& text_chunks = {});

/// Names write_pngs uses for a batch of `batch_size` images (for tools that report or clean them up).
std::vector<std::string> png_batch_paths(const std::string& base_path, int64_t batch_size);

/// An image [3, H, W] or [1, 3, H, W] (floating point, any device) as [H, W, 3] uint8 on the CPU, quantised
/// exactly as write_png writes it. Throws OutputError for anything else.
at::Tensor image_to_rgb8(const at::Tensor& image);

/// `height` rows of `width` RGB pixels, 3 bytes each, as images [1, 3, H, W] float32 in [0, 1] (copied), the
/// tensor read_image gives for the same pixels in an 8-bit PNG. Throws InputError for a null pointer or a side
/// outside 1..kMaxImageSide.
ImageBatch image_from_rgb8(const uint8_t* rgb, int64_t width, int64_t height);

/// Reads a PNG or JPEG (told apart by their signatures) as images [1, 3, H, W] float32 in [0, 1], as
/// PIL's convert("RGB") in diffusers' load_image would give them.
/// PNG: every colour type (gray, gray+alpha, RGB, RGBA, palette) at every bit depth (1–16), interlaced
/// or not. Gray is replicated to RGB; alpha and tRNS transparency are dropped; 16-bit samples keep their
/// full precision (x / 65535).
/// JPEG (libjpeg-turbo, default islow DCT and fancy upsampling, as PIL): baseline and progressive;
/// grayscale is replicated to RGB; YCbCr and RGB give RGB; CMYK and YCCK are read with Adobe's inverted
/// convention, as PIL assumes, and converted as PIL does (R = (1 - C)(1 - K)). A file that libjpeg
/// reports as corrupt, even only with a warning (a truncated file, a bad Huffman code), is rejected,
/// as PIL rejects truncated images; extraneous bytes before a marker are tolerated.
/// Not done: colour management (gAMA/iCCP/ICC profiles are ignored) and EXIF orientation (diffusers'
/// load_image applies exif_transpose; images here keep their stored orientation).
/// Throws InputError naming the file when it is missing, neither PNG nor JPEG (GIF, WebP… are named as
/// such), corrupt or truncated, or larger than kMaxImageSide on a side (checked from the header, before
/// the pixels are allocated).
ImageBatch read_image(const std::string& path);

/// The text chunks (tEXt, zTXt, iTXt) of a PNG, before and after the image data, in file order.
/// tEXt/zTXt (Latin-1) are converted to UTF-8. Throws InputError as read_image.
TextChunks read_png_text(const std::string& path);

}  // namespace tessera
