#include "tessera/image_io.h"

#include <png.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>
#include <jerror.h>

#include "tessera/error.h"

namespace tessera {

namespace {

std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

std::string errno_str(int err) { return std::strerror(err); }

// ---------------------------------------------------------------- libpng glue
// libpng reports errors by longjmp. A longjmp must not cross C++ frames with live destructors, so every
// libpng call happens inside the small functions below, whose locals are all trivial; the C++ callers own
// the buffers and the cleanup.

struct PngContext {
  png_structp png = nullptr;
  png_infop info = nullptr;
  char error[256] = {0};
};

void on_png_error(png_structp png, png_const_charp message) {
  auto* ctx = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(ctx->error, sizeof ctx->error, "%s", message);
  png_longjmp(png, 1);
}

void on_png_warning(png_structp, png_const_charp) {}  // benign (bad ancillary CRCs, unknown chunks…)

bool encode_rgb8(PngContext* c, FILE* fp, const uint8_t* pixels, uint32_t width, uint32_t height, png_text* texts,
                 int num_texts) {
  if (setjmp(png_jmpbuf(c->png))) return false;
  png_init_io(c->png, fp);
  png_set_IHDR(c->png, c->info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_sRGB(c->png, c->info, PNG_sRGB_INTENT_PERCEPTUAL);
  if (num_texts > 0) png_set_text(c->png, c->info, texts, num_texts);
  png_write_info(c->png, c->info);
  for (uint32_t y = 0; y < height; ++y) png_write_row(c->png, pixels + static_cast<size_t>(y) * width * 3);
  png_write_end(c->png, nullptr);
  return true;
}

struct PngHeader {
  uint32_t width = 0, height = 0;
  int bit_depth = 0;  // after transforms: 8 or 16
  int passes = 1;
  size_t rowbytes = 0;
};

// Reads up to the image data and sets the transforms that turn any PNG into 8- or 16-bit RGB.
bool read_header(PngContext* c, FILE* fp, PngHeader* h) {
  if (setjmp(png_jmpbuf(c->png))) return false;
  png_init_io(c->png, fp);
  png_set_sig_bytes(c->png, 8);  // the caller checked the signature
  png_read_info(c->png, c->info);
  int color_type = png_get_color_type(c->png, c->info);
  png_set_palette_to_rgb(c->png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) {
    png_set_expand_gray_1_2_4_to_8(c->png);
    png_set_gray_to_rgb(c->png);
  }
  png_set_strip_alpha(c->png);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  png_set_swap(c->png);  // 16-bit samples in host order
#endif
  h->passes = png_set_interlace_handling(c->png);
  png_read_update_info(c->png, c->info);
  h->width = png_get_image_width(c->png, c->info);
  h->height = png_get_image_height(c->png, c->info);
  h->bit_depth = png_get_bit_depth(c->png, c->info);
  h->rowbytes = png_get_rowbytes(c->png, c->info);
  return true;
}

bool read_rows(PngContext* c, png_bytepp rows) {
  if (setjmp(png_jmpbuf(c->png))) return false;
  png_read_image(c->png, rows);
  return true;
}

// Decodes and discards the pixels (to reach the text chunks after the image data) with one row of memory.
bool skip_rows(PngContext* c, png_bytep scratch, uint32_t height, int passes) {
  if (setjmp(png_jmpbuf(c->png))) return false;
  for (int p = 0; p < passes; ++p)
    for (uint32_t y = 0; y < height; ++y) png_read_row(c->png, scratch, nullptr);
  return true;
}

bool read_end(PngContext* c) {
  if (setjmp(png_jmpbuf(c->png))) return false;
  png_read_end(c->png, c->info);  // text after the image data lands in the same info
  return true;
}

// ---------------------------------------------------------------- text chunks

bool is_ascii(const std::string& s) {
  for (unsigned char ch : s)
    if (ch >= 0x80) return false;
  return true;
}

bool is_valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

std::string latin1_to_utf8(const char* s, size_t n) {
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

// Why a keyword is unusable, or "" when it is fine (PNG spec §11.3.4.2, restricted to ASCII).
std::string keyword_problem(const std::string& key) {
  if (key.empty() || key.size() > 79) return "must be 1 to 79 characters long";
  for (unsigned char ch : key)
    if (ch < 32 || ch > 126) return "must be printable ASCII";
  if (key.front() == ' ' || key.back() == ' ') return "must not start or end with a space";
  if (key.find("  ") != std::string::npos) return "must not contain two spaces in a row";
  return {};
}

// png_text entries pointing into `chunks` (which must outlive them).
std::vector<png_text> make_png_texts(const std::string& path, const TextChunks& chunks) {
  std::vector<png_text> out;
  for (const auto& [key, value] : chunks) {
    std::string problem = keyword_problem(key);
    if (!problem.empty())
      throw OutputError("cannot write PNG '" + path + "': text chunk keyword '" + key + "' " + problem);
    if (value.find('\0') != std::string::npos)
      throw OutputError("cannot write PNG '" + path + "': text chunk '" + key + "' contains a NUL byte");
    png_text t{};
    t.key = const_cast<char*>(key.c_str());
    t.text = const_cast<char*>(value.c_str());
    if (is_ascii(value)) {
      t.compression = PNG_TEXT_COMPRESSION_NONE;  // tEXt: what every reader understands
      t.text_length = value.size();
    } else {
      if (!is_valid_utf8(value))
        throw OutputError("cannot write PNG '" + path + "': text chunk '" + key + "' is not valid UTF-8");
      t.compression = PNG_ITXT_COMPRESSION_NONE;  // iTXt: the only chunk that carries UTF-8
      t.itxt_length = value.size();
      t.lang = const_cast<char*>("");
      t.lang_key = const_cast<char*>("");
    }
    out.push_back(t);
  }
  return out;
}

// ---------------------------------------------------------------- writing

// The file mode a plain fopen would give (mkstemp creates 0600, which would hide outputs from other users).
mode_t default_file_mode() {
  mode_t mask = 022;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("Umask:", 0) == 0) mask = static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
  return 0666 & ~mask;
}

/// A temporary file next to its target; removed unless committed (renamed onto the target).
class TempPng {
 public:
  explicit TempPng(std::string target) : target_(std::move(target)) {}
  TempPng(TempPng&& o) noexcept : target_(std::move(o.target_)), temp_(std::move(o.temp_)) { o.temp_.clear(); }
  TempPng(const TempPng&) = delete;
  TempPng& operator=(const TempPng&) = delete;
  ~TempPng() {
    if (!temp_.empty()) ::unlink(temp_.c_str());
  }

  /// Encodes `hwc` ([H, W, 3] uint8, contiguous) with `texts` into a new temporary file.
  void encode(const at::Tensor& hwc, std::vector<png_text>& texts) {
    namespace fs = std::filesystem;
    fs::path dir = fs::path(target_).parent_path();
    if (dir.empty()) dir = ".";
    std::string tmpl = (dir / ("." + fs::path(target_).filename().string() + ".tmp-XXXXXX")).string();
    int fd = ::mkstemp(tmpl.data());
    if (fd < 0) {
      int err = errno;
      if (err == ENOENT || err == ENOTDIR)
        fail("directory '" + dir.string() + "' does not exist");
      fail("cannot create a file in '" + dir.string() + "' (" + errno_str(err) + ")");
    }
    temp_ = tmpl;
    ::fchmod(fd, default_file_mode());
    FILE* fp = ::fdopen(fd, "wb");
    if (!fp) {
      int err = errno;
      ::close(fd);
      fail(errno_str(err));
    }
    PngContext ctx;
    ctx.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
    if (ctx.png) ctx.info = png_create_info_struct(ctx.png);
    bool ok = ctx.png && ctx.info &&
              encode_rgb8(&ctx, fp, hwc.data_ptr<uint8_t>(), static_cast<uint32_t>(hwc.size(1)),
                          static_cast<uint32_t>(hwc.size(0)), texts.data(), static_cast<int>(texts.size()));
    std::string reason = ctx.png && ctx.info ? ctx.error : "out of memory";
    png_destroy_write_struct(&ctx.png, &ctx.info);
    // Flush to disk before the rename, so a crash cannot leave a renamed but empty file.
    int err = 0;
    if (ok && (std::fflush(fp) != 0 || ::fsync(::fileno(fp)) != 0)) err = errno;
    if (std::fclose(fp) != 0 && ok && !err) err = errno;
    if (!ok) fail(reason);
    if (err) fail(errno_str(err));
  }

  /// Renames the temporary file onto the target (atomic on POSIX file systems).
  void commit() {
    if (::rename(temp_.c_str(), target_.c_str()) != 0) fail(errno_str(errno));
    temp_.clear();
  }

 private:
  [[noreturn]] void fail(const std::string& reason) const {
    throw OutputError("cannot write PNG '" + target_ + "': " + reason);
  }
  std::string target_;
  std::string temp_;
};

// Checks an image [3, H, W] and quantises it to [H, W, 3] uint8 as diffusers' numpy_to_pil. `what` starts the
// error message ("cannot write PNG 'out.png'").
at::Tensor quantise_rgb8_for(const std::string& what, const at::Tensor& image) {
  auto fail = [&](const std::string& why) { throw OutputError(what + ": " + why); };
  if (!image.defined()) fail("the image tensor is undefined");
  if (image.dim() != 3 || image.size(0) != 3)
    fail("expected an image [3, H, W] or [1, 3, H, W], got " + shape_str(image));
  if (!at::isFloatingType(image.scalar_type()))
    fail(std::string("expected floating-point pixels in [0, 1], got ") + at::toString(image.scalar_type()));
  if (image.size(1) < 1 || image.size(2) < 1 || image.size(1) > kMaxImageSide || image.size(2) > kMaxImageSide)
    fail("image size " + shape_str(image) + " is outside 1.." + std::to_string(kMaxImageSide) + " per side");
  at::Tensor x = image.detach().to(at::kCPU, at::kFloat);
  x = at::nan_to_num(x, 0.0, 1.0, 0.0).clamp(0.0, 1.0).mul(255.0).round();  // round: half to even, as numpy
  return x.to(at::kByte).permute({1, 2, 0}).contiguous();                     // [H, W, 3]
}

at::Tensor quantise_rgb8(const std::string& path, const at::Tensor& image) {
  return quantise_rgb8_for("cannot write PNG '" + path + "'", image);
}

std::string strip_png_suffix(const std::string& base) {
  if (base.size() > 4 && base.compare(base.size() - 4, 4, ".png") == 0) return base.substr(0, base.size() - 4);
  return base;
}

// ---------------------------------------------------------------- reading

using FilePtr = std::unique_ptr<FILE, int (*)(FILE*)>;

/// Opens a regular file for reading; InputError naming it otherwise.
FilePtr open_image_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw InputError("cannot open image '" + path + "': " + errno_str(errno));
  if (!S_ISREG(st.st_mode)) throw InputError("cannot read image '" + path + "': not a regular file");
  FilePtr fp(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!fp) throw InputError("cannot open image '" + path + "': " + errno_str(errno));
  return fp;
}

/// True when `path` starts with a JPEG SOI marker (FF D8 FF); false also when it cannot be read (the PNG
/// reader then reports why).
bool starts_as_jpeg(const std::string& path) {
  FilePtr fp(std::fopen(path.c_str(), "rb"), &std::fclose);
  unsigned char sig[3] = {0};
  return fp && std::fread(sig, 1, sizeof sig, fp.get()) == sizeof sig && sig[0] == 0xFF && sig[1] == 0xD8 &&
         sig[2] == 0xFF;
}

// ---------------------------------------------------------------- libjpeg glue
// libjpeg's default error handler calls exit(). Ours formats the message and longjmps back into the
// function that made the libjpeg call; as with libpng, those functions have only trivial locals.
// Warnings about corrupt data (a truncated file gets a fake end marker, a bad Huffman code is skipped…)
// are errors here, as PIL's "image file is truncated": a half-grey image must not reach a pipeline.

/// Progressive files may hold any number of scans; more than this is treated as hostile.
constexpr int kMaxJpegScans = 1000;

struct JpegContext {
  jpeg_decompress_struct cinfo{};
  jpeg_error_mgr err{};
  jpeg_progress_mgr progress{};
  std::jmp_buf jump{};
  char error[JMSG_LENGTH_MAX] = {0};
  bool created = false;
};

struct JpegHeader {
  uint32_t width = 0, height = 0;
  J_COLOR_SPACE color_space = JCS_UNKNOWN;  // of the file
  int components = 0;
};

[[noreturn]] void on_jpeg_error(j_common_ptr cinfo) {
  auto* ctx = static_cast<JpegContext*>(cinfo->client_data);
  (*cinfo->err->format_message)(cinfo, ctx->error);
  std::longjmp(ctx->jump, 1);
}

void on_jpeg_message(j_common_ptr cinfo, int level) {
  // level -1: a warning (corrupt data). Extraneous bytes before a marker are harmless, as PIL treats them.
  if (level < 0 && cinfo->err->msg_code != JWRN_EXTRANEOUS_DATA) on_jpeg_error(cinfo);
}

void on_jpeg_progress(j_common_ptr cinfo) {
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number > kMaxJpegScans) {
    auto* ctx = static_cast<JpegContext*>(cinfo->client_data);
    std::snprintf(ctx->error, sizeof ctx->error, "more than %d progressive scans", kMaxJpegScans);
    std::longjmp(ctx->jump, 1);
  }
}

bool jpeg_open(JpegContext* c, FILE* fp, JpegHeader* h) {
  c->cinfo.err = jpeg_std_error(&c->err);
  c->err.error_exit = on_jpeg_error;
  c->err.emit_message = on_jpeg_message;
  c->cinfo.client_data = c;
  if (setjmp(c->jump)) return false;
  jpeg_create_decompress(&c->cinfo);
  c->created = true;
  c->progress.progress_monitor = on_jpeg_progress;
  c->cinfo.progress = &c->progress;
  jpeg_stdio_src(&c->cinfo, fp);
  jpeg_read_header(&c->cinfo, TRUE);
  h->width = c->cinfo.image_width;
  h->height = c->cinfo.image_height;
  h->color_space = c->cinfo.jpeg_color_space;
  h->components = c->cinfo.num_components;
  return true;
}

// Decodes into `pixels` (height rows of width * components bytes, `stride` apart) in `out_space`, with
// libjpeg's defaults (islow DCT, fancy upsampling) as PIL uses them.
bool jpeg_decode(JpegContext* c, J_COLOR_SPACE out_space, int components, uint8_t* pixels, size_t stride) {
  if (setjmp(c->jump)) return false;
  c->cinfo.out_color_space = out_space;
  jpeg_start_decompress(&c->cinfo);
  if (c->cinfo.output_components != components) {
    std::snprintf(c->error, sizeof c->error, "decoded %d components, expected %d", c->cinfo.output_components,
                  components);
    return false;
  }
  while (c->cinfo.output_scanline < c->cinfo.output_height) {
    JSAMPROW row = pixels + static_cast<size_t>(c->cinfo.output_scanline) * stride;
    jpeg_read_scanlines(&c->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&c->cinfo);  // reads to the end marker: a truncated tail is caught here
  return true;
}

/// An open JPEG file with libjpeg's decompressor; releases both.
class JpegReader {
 public:
  explicit JpegReader(std::string path) : path_(std::move(path)), fp_(open_image_file(path_)) {}
  JpegReader(const JpegReader&) = delete;
  JpegReader& operator=(const JpegReader&) = delete;
  ~JpegReader() {
    if (ctx_->created) jpeg_destroy_decompress(&ctx_->cinfo);
  }

  /// Reads the header; rejects unsupported colour spaces and oversized images before any allocation.
  JpegHeader header() {
    JpegHeader h;
    if (!jpeg_open(ctx_.get(), fp_.get(), &h)) corrupt();
    if (h.width > kMaxImageSide || h.height > kMaxImageSide)
      fail(std::to_string(h.width) + "x" + std::to_string(h.height) + " pixels is larger than the supported " +
           std::to_string(kMaxImageSide) + " per side");
    if (out_space(h) == JCS_UNKNOWN)
      fail("unsupported JPEG colour space (" + std::to_string(h.components) +
           " components); supported: grayscale, RGB, YCbCr, CMYK, YCCK");
    return h;
  }

  /// Decodes to [H, W, components] uint8; components is 1 (gray), 3 (RGB) or 4 (CMYK).
  at::Tensor pixels(const JpegHeader& h) {
    const int components = out_components(h);
    at::Tensor raw = at::empty({int64_t(h.height), int64_t(h.width) * components}, at::kByte);
    if (!jpeg_decode(ctx_.get(), out_space(h), components, raw.data_ptr<uint8_t>(), size_t(raw.stride(0))))
      corrupt();
    return raw.view({int64_t(h.height), int64_t(h.width), components});
  }

  static J_COLOR_SPACE out_space(const JpegHeader& h) {
    switch (h.color_space) {
      case JCS_GRAYSCALE: return JCS_GRAYSCALE;
      case JCS_RGB:
      case JCS_YCbCr: return JCS_RGB;
      case JCS_CMYK:
      case JCS_YCCK: return JCS_CMYK;  // libjpeg converts YCCK to CMYK
      default: return JCS_UNKNOWN;
    }
  }
  static int out_components(const JpegHeader& h) {
    J_COLOR_SPACE s = out_space(h);
    return s == JCS_GRAYSCALE ? 1 : s == JCS_CMYK ? 4 : 3;
  }

 private:
  [[noreturn]] void corrupt() const { fail(std::string("corrupt, truncated or unsupported JPEG (") + ctx_->error + ")"); }
  [[noreturn]] void fail(const std::string& why) const {
    throw InputError("cannot read image '" + path_ + "': " + why);
  }

  std::string path_;
  FilePtr fp_;
  std::unique_ptr<JpegContext> ctx_ = std::make_unique<JpegContext>();  // after fp_: destroyed first
};

/// [H, W, 1|3|4] uint8 → [H, W, 3] float in [0, 1], as PIL's convert("RGB"): gray is replicated; CMYK is
/// stored inverted (Adobe's convention, which PIL assumes for every CMYK JPEG), and R = (1 - C)(1 - K) on
/// the un-inverted values, i.e. stored_C * stored_K.
at::Tensor jpeg_to_rgb(const at::Tensor& raw) {
  at::Tensor x = raw.to(at::kFloat).div_(255.0);
  if (x.size(2) == 1) return x.expand({x.size(0), x.size(1), 3});
  if (x.size(2) == 4) return x.narrow(2, 0, 3).mul(x.narrow(2, 3, 1));  // [H, W, 3] * [H, W, 1]
  return x;
}

ImageBatch read_jpeg(const std::string& path) {
  JpegReader reader(path);
  JpegHeader h = reader.header();
  at::Tensor rgb = jpeg_to_rgb(reader.pixels(h));                        // [H, W, 3]
  return ImageBatch{rgb.permute({2, 0, 1}).unsqueeze(0).contiguous()};  // [1, 3, H, W]
}

/// An open PNG file positioned after its signature, with libpng's read structs; releases both.
class PngReader {
 public:
  /// `supported` names the formats the caller reads, for the message about a foreign file.
  PngReader(std::string path, const char* supported) : path_(std::move(path)), fp_(open_image_file(path_)) {
    unsigned char sig[8] = {0};
    size_t n = std::fread(sig, 1, sizeof sig, fp_.get());
    if (n < sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0) {
      std::string what = sniff_format(sig, n);
      fail("cannot read image '" + path_ + "': " + (n == 0 ? std::string("the file is empty")
                                                    : what.empty() ? std::string("not a PNG file")
                                                                   : "a " + what + " file, not a PNG") +
               "; only " + supported + " images are supported",
           what.empty() ? std::string() : "convert it to PNG first (e.g. `convert in.jpg out.png`)");
    }
    ctx_.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx_, on_png_error, on_png_warning);
    if (ctx_.png) ctx_.info = png_create_info_struct(ctx_.png);
    if (!ctx_.png || !ctx_.info) fail("cannot read image '" + path_ + "': out of memory");
  }
  PngReader(const PngReader&) = delete;
  PngReader& operator=(const PngReader&) = delete;

  PngHeader header() {
    PngHeader h;
    if (!read_header(&ctx_, fp_.get(), &h)) corrupt();
    if (h.width > kMaxImageSide || h.height > kMaxImageSide)
      fail("cannot read image '" + path_ + "': " + std::to_string(h.width) + "x" + std::to_string(h.height) +
           " pixels is larger than the supported " + std::to_string(kMaxImageSide) + " per side");
    return h;
  }
  void rows(std::vector<png_bytep>& rows) {
    if (!read_rows(&ctx_, rows.data())) corrupt();
  }
  void skip(const PngHeader& h) {
    std::vector<png_byte> scratch(h.rowbytes);
    if (!skip_rows(&ctx_, scratch.data(), h.height, h.passes)) corrupt();
  }
  void end() {
    if (!read_end(&ctx_)) corrupt();
  }
  TextChunks texts() const {
    TextChunks out;
    png_textp text = nullptr;
    int n = png_get_text(ctx_.png, ctx_.info, &text, nullptr);
    for (int i = 0; i < n; ++i) {
      std::string key = latin1_to_utf8(text[i].key, std::strlen(text[i].key));
      bool itxt = text[i].compression == PNG_ITXT_COMPRESSION_NONE || text[i].compression == PNG_ITXT_COMPRESSION_zTXt;
      size_t len = itxt ? text[i].itxt_length : text[i].text_length;
      out.emplace_back(key, itxt ? std::string(text[i].text, len) : latin1_to_utf8(text[i].text, len));
    }
    return out;
  }

 private:
  static std::string sniff_format(const unsigned char* s, size_t n) {
    auto starts = [&](const char* magic, size_t len) { return n >= len && std::memcmp(s, magic, len) == 0; };
    if (starts("\xFF\xD8\xFF", 3)) return "JPEG";
    if (starts("GIF8", 4)) return "GIF";
    if (starts("BM", 2)) return "BMP";
    if (starts("RIFF", 4)) return "RIFF (WebP?)";
    if (starts("II*\0", 4) || starts("MM\0*", 4)) return "TIFF";
    if (starts("\x89PNG", 4)) return "truncated PNG";
    return {};
  }
  [[noreturn]] void corrupt() const {
    fail("cannot read image '" + path_ + "': corrupt or truncated PNG (" + ctx_.error + ")");
  }
  [[noreturn]] static void fail(const std::string& message, const std::string& hint = {}) {
    throw InputError(message, {}, {}, hint);
  }

  /// libpng's read structs, destroyed with the reader (also when its constructor throws).
  struct ReadContext : PngContext {
    ReadContext() = default;
    ReadContext(const ReadContext&) = delete;
    ReadContext& operator=(const ReadContext&) = delete;
    ~ReadContext() {
      if (png) png_destroy_read_struct(&png, &info, nullptr);
    }
  };

  std::string path_;
  FilePtr fp_;
  ReadContext ctx_;  // after fp_: destroyed before the file is closed
};

}  // namespace

void write_png(const std::string& path, const at::Tensor& image, const TextChunks& text_chunks) {
  at::Tensor chw = image.defined() && image.dim() == 4 && image.size(0) == 1 ? image[0] : image;
  at::Tensor hwc = quantise_rgb8(path, chw);
  std::vector<png_text> texts = make_png_texts(path, text_chunks);
  TempPng out(path);
  out.encode(hwc, texts);
  out.commit();
}

std::vector<std::string> png_batch_paths(const std::string& base_path, int64_t batch_size) {
  std::string base = strip_png_suffix(base_path);
  if (batch_size == 1) return {base + ".png"};
  std::vector<std::string> out;
  size_t width = std::to_string(std::max<int64_t>(batch_size - 1, 0)).size();
  for (int64_t i = 0; i < batch_size; ++i) {
    std::string index = std::to_string(i);
    out.push_back(base + "-" + std::string(width - index.size(), '0') + index + ".png");
  }
  return out;
}

std::vector<std::string> write_pngs(const std::string& base_path, const at::Tensor& images,
                                    const TextChunks& text_chunks) {
  if (!images.defined() || images.dim() != 4 || images.size(0) < 1)
    throw OutputError("cannot write PNGs '" + base_path + "': expected images [B, 3, H, W], got " +
                      (images.defined() ? shape_str(images) : std::string("an undefined tensor")));
  std::vector<std::string> paths = png_batch_paths(base_path, images.size(0));
  std::vector<TempPng> temps;
  for (size_t i = 0; i < paths.size(); ++i) {
    at::Tensor hwc = quantise_rgb8(paths[i], images[static_cast<int64_t>(i)]);
    std::vector<png_text> texts = make_png_texts(paths[i], text_chunks);
    temps.emplace_back(paths[i]);
    temps.back().encode(hwc, texts);
  }
  for (auto& t : temps) t.commit();
  return paths;
}

ImageBatch read_image(const std::string& path) {
  if (starts_as_jpeg(path)) return read_jpeg(path);
  PngReader reader(path, "PNG and JPEG");
  PngHeader h = reader.header();
  const int64_t height = h.height, width = h.width;
  const int64_t bytes_per_sample = h.bit_depth == 16 ? 2 : 1;
  // Rows decode straight into the tensor: [H, W, 3] samples of 1 or 2 bytes.
  at::Tensor raw = at::empty({height, width * 3 * bytes_per_sample}, at::kByte);
  std::vector<png_bytep> rows(static_cast<size_t>(height));
  for (int64_t y = 0; y < height; ++y) rows[y] = raw.data_ptr<uint8_t>() + y * raw.stride(0);
  reader.rows(rows);
  reader.end();
  at::Tensor rgb;  // [H, W, 3] float in [0, 1]
  if (bytes_per_sample == 2)
    rgb = raw.view(at::kShort).view({height, width, 3}).to(at::kInt).bitwise_and_(0xFFFF).to(at::kFloat).div_(65535.0);
  else
    rgb = raw.view({height, width, 3}).to(at::kFloat).div_(255.0);
  return ImageBatch{rgb.permute({2, 0, 1}).unsqueeze(0).contiguous()};  // [1, 3, H, W]
}

TextChunks read_png_text(const std::string& path) {
  PngReader reader(path, "PNG");
  PngHeader h = reader.header();
  reader.skip(h);
  reader.end();
  return reader.texts();
}

at::Tensor image_to_rgb8(const at::Tensor& image) {
  at::Tensor chw = image.defined() && image.dim() == 4 && image.size(0) == 1 ? image[0] : image;
  return quantise_rgb8_for("cannot convert the image to RGB8", chw);
}

ImageBatch image_from_rgb8(const uint8_t* rgb, int64_t width, int64_t height) {
  if (!rgb) throw InputError("RGB8 image: the pixel pointer is null");
  if (width < 1 || height < 1 || width > kMaxImageSide || height > kMaxImageSide)
    throw InputError("RGB8 image: size " + std::to_string(width) + "x" + std::to_string(height) + " is outside 1.." +
                     std::to_string(kMaxImageSide) + " per side");
  // [H, W, 3] bytes → [1, 3, H, W] float in [0, 1], as read_image decodes an 8-bit PNG.
  at::Tensor raw = at::from_blob(const_cast<uint8_t*>(rgb), {height, width, 3}, at::kByte);
  return ImageBatch{raw.to(at::kFloat).div_(255.0).permute({2, 0, 1}).unsqueeze(0).contiguous()};
}

}  // namespace tessera
