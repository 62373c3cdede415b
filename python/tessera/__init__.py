"""Tessera from Python: a ctypes binding of the C API (include/tessera/tessera.h), no compiled extension.

    import tessera
    pipe = tessera.Pipeline.from_recipe("recipes/sd/auto.yaml")
    images = pipe(prompt="a red fox", seed=42, num_inference_steps=20)
    images[0].save_png("fox.png")        # or: numpy arrays [H, W, 3] uint8 when numpy is installed

The library is found from $TESSERA_LIBRARY, then next to this package in a source checkout (build/api/), then
the system's library path (libtessera.so). Inputs are set by Python type: str as `tessera run --set` parses it
(numbers, lists, image file paths), bool, int, float, an Image or a [H, W, 3] uint8 array for image inputs, and
a float32 numpy array for tensor inputs.
"""

import ctypes
import ctypes.util
import os
import struct
import zlib

try:  # optional: images come back as numpy arrays when it is installed
    import numpy as _np
except ImportError:  # pragma: no cover - depends on the machine
    _np = None

__all__ = ["Error", "Cancelled", "Image", "Progress", "Result", "Context", "Pipeline", "version"]

ABI_VERSION = 1

EVENT_BLOCK_START, EVENT_BLOCK_END, EVENT_STEP = 0, 1, 2


class Error(RuntimeError):
    """A failed call: `status` is the tessera_status (the CLI's exit code), `status_name` its name."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.status_name = _lib().tessera_status_name(status).decode()


class Cancelled(Error):
    """The progress callback returned False (TESSERA_ERR_CANCELLED)."""


class _Progress(ctypes.Structure):
    _fields_ = [("event", ctypes.c_int), ("path", ctypes.c_char_p), ("step", ctypes.c_int64),
                ("total", ctypes.c_int64), ("elapsed_s", ctypes.c_double)]


_PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_Progress), ctypes.c_void_p)


class Progress:
    """One progress event: `event` ("block_start", "block_end" or "step"), the block or loop `path`, and for
    steps the 0-based `step` of `total`; `elapsed_s` since the run started."""

    __slots__ = ("event", "path", "step", "total", "elapsed_s")

    def __init__(self, p):
        self.event = {EVENT_BLOCK_START: "block_start", EVENT_BLOCK_END: "block_end", EVENT_STEP: "step"}[p.event]
        self.path = p.path.decode()
        self.step, self.total, self.elapsed_s = p.step, p.total, p.elapsed_s

    def __repr__(self):
        if self.event == "step":
            return "Progress(step %d/%d of %s)" % (self.step + 1, self.total, self.path)
        return "Progress(%s %s)" % (self.event, self.path)


class Image:
    """8-bit RGB pixels: `data` holds `height` rows of `width` * 3 bytes."""

    __slots__ = ("width", "height", "data")

    def __init__(self, width, height, data):
        if len(data) != width * height * 3:
            raise ValueError("Image: %d bytes for %dx%d RGB (expected %d)" % (len(data), width, height,
                                                                             width * height * 3))
        self.width, self.height, self.data = width, height, bytes(data)

    def pixel(self, x, y):
        i = (y * self.width + x) * 3
        return tuple(self.data[i:i + 3])

    def array(self):
        """A numpy array [H, W, 3] uint8 (needs numpy)."""
        if _np is None:
            raise RuntimeError("numpy is not installed")
        return _np.frombuffer(self.data, dtype=_np.uint8).reshape(self.height, self.width, 3).copy()

    def save_png(self, path):
        """Writes the pixels as an 8-bit RGB PNG (zlib from the standard library)."""
        rows = b"".join(b"\x00" + self.data[y * self.width * 3:(y + 1) * self.width * 3] for y in range(self.height))

        def chunk(kind, body):
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)) +
               chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(png)
        os.replace(tmp, path)

    def __repr__(self):
        return "Image(%dx%d)" % (self.width, self.height)


_LIB = None


def _find_library():
    env = os.environ.get("TESSERA_LIBRARY")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "..", "..", "build", "api", "libtessera.so"),
                      os.path.join(here, "..", "..", "..", "libtessera.so")):
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    found = ctypes.util.find_library("tessera")
    if found:
        return found
    raise OSError("libtessera.so not found: set TESSERA_LIBRARY to its path (a build has it at build/api/)")


def _lib():
    global _LIB
    if _LIB is not None:
        return _LIB
    lib = ctypes.CDLL(_find_library())
    P, c = ctypes.c_void_p, ctypes
    sigs = {
        "tessera_version": (c.c_char_p, []),
        "tessera_abi_version": (c.c_int, []),
        "tessera_last_error": (c.c_char_p, []),
        "tessera_status_name": (c.c_char_p, [c.c_int]),
        "tessera_init_runtime": (c.c_int, [c.c_int]),
        "tessera_context_create": (c.c_int, [c.POINTER(P)]),
        "tessera_context_free": (None, [P]),
        "tessera_load_plugin": (c.c_int, [P, c.c_char_p]),
        "tessera_context_loaded_bytes": (c.c_int64, [P]),
        "tessera_pipeline_load": (c.c_int, [P, c.c_char_p, c.POINTER(P)]),
        "tessera_pipeline_free": (None, [P]),
        "tessera_set_string": (c.c_int, [P, c.c_char_p, c.c_char_p]),
        "tessera_set_int": (c.c_int, [P, c.c_char_p, c.c_int64]),
        "tessera_set_float": (c.c_int, [P, c.c_char_p, c.c_double]),
        "tessera_set_bool": (c.c_int, [P, c.c_char_p, c.c_int]),
        "tessera_set_image_file": (c.c_int, [P, c.c_char_p, c.c_char_p]),
        "tessera_set_image_rgb8": (c.c_int, [P, c.c_char_p, c.c_char_p, c.c_int, c.c_int]),
        "tessera_set_tensor_f32": (c.c_int, [P, c.c_char_p, c.c_void_p, c.POINTER(c.c_int64), c.c_int]),
        "tessera_clear_inputs": (c.c_int, [P]),
        "tessera_run": (c.c_int, [P, _PROGRESS_FN, P, c.POINTER(P)]),
        "tessera_result_image_count": (c.c_int, [P]),
        "tessera_result_image_rgb8": (c.c_int, [P, c.c_int, c.POINTER(c.POINTER(c.c_uint8)), c.POINTER(c.c_int),
                                                c.POINTER(c.c_int)]),
        "tessera_result_write_png": (c.c_int, [P, c.c_int, c.c_char_p]),
        "tessera_result_tensor_f32": (c.c_int, [P, c.c_char_p, c.POINTER(c.POINTER(c.c_float)),
                                                c.POINTER(c.POINTER(c.c_int64)), c.POINTER(c.c_int)]),
        "tessera_result_int": (c.c_int, [P, c.c_char_p, c.POINTER(c.c_int64)]),
        "tessera_result_free": (None, [P]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    if lib.tessera_abi_version() != ABI_VERSION:
        raise OSError("libtessera ABI %d, this binding speaks %d" % (lib.tessera_abi_version(), ABI_VERSION))
    _LIB = lib
    return lib


def _check(status):
    if status != 0:
        message = _lib().tessera_last_error().decode(errors="replace")
        raise (Cancelled if status == 10 else Error)(status, message)


def version():
    return _lib().tessera_version().decode()


_RUNTIME_READY = False


class Context:
    """The built-in registry, plugins, and the models loaded so far (shared by every pipeline from it).
    The first Context sets up the process (threads = cores unless `threads` is given, BLAS kernels)."""

    def __init__(self, threads=0, plugins=()):
        global _RUNTIME_READY
        lib = _lib()
        if not _RUNTIME_READY:
            lib.tessera_init_runtime(int(threads))
            _RUNTIME_READY = True
        handle = ctypes.c_void_p()
        _check(lib.tessera_context_create(ctypes.byref(handle)))
        self._h = handle
        for p in plugins:
            _check(lib.tessera_load_plugin(self._h, os.fsencode(p)))

    @property
    def loaded_bytes(self):
        return _lib().tessera_context_loaded_bytes(self._h)

    def __del__(self):
        if getattr(self, "_h", None) and _LIB is not None:
            _LIB.tessera_context_free(self._h)
            self._h = None


class Result:
    """A finished run: `images` (Image objects, or numpy arrays when numpy is installed), `tensor(name)`,
    `int(name)` and `write_png(index, path)` (with Tessera's metadata)."""

    def __init__(self, handle):
        self._h = handle
        lib = _lib()
        self.images = []
        for i in range(lib.tessera_result_image_count(self._h)):
            rgb, w, h = ctypes.POINTER(ctypes.c_uint8)(), ctypes.c_int(), ctypes.c_int()
            _check(lib.tessera_result_image_rgb8(self._h, i, ctypes.byref(rgb), ctypes.byref(w), ctypes.byref(h)))
            img = Image(w.value, h.value, ctypes.string_at(rgb, w.value * h.value * 3))
            self.images.append(img.array() if _np is not None else img)

    def tensor(self, name):
        """Output `name` as float32: a numpy array, or (shape, list of floats) without numpy."""
        data, shape, ndim = ctypes.POINTER(ctypes.c_float)(), ctypes.POINTER(ctypes.c_int64)(), ctypes.c_int()
        _check(_lib().tessera_result_tensor_f32(self._h, name.encode(), ctypes.byref(data), ctypes.byref(shape),
                                                ctypes.byref(ndim)))
        dims = tuple(shape[i] for i in range(ndim.value))
        n = 1
        for d in dims:
            n *= d
        if _np is not None:
            return _np.ctypeslib.as_array(data, shape=(n,)).copy().reshape(dims)
        return dims, [data[i] for i in range(n)]

    def int(self, name):
        value = ctypes.c_int64()
        _check(_lib().tessera_result_int(self._h, name.encode(), ctypes.byref(value)))
        return value.value

    def write_png(self, index, path):
        _check(_lib().tessera_result_write_png(self._h, index, os.fsencode(path)))

    def __del__(self):
        if getattr(self, "_h", None) and _LIB is not None:
            _LIB.tessera_result_free(self._h)
            self._h = None


class Pipeline:
    """A recipe, validated when loaded. Call it with inputs as keyword arguments to get the images."""

    def __init__(self, context, handle):
        self.context, self._h = context, handle

    @classmethod
    def from_recipe(cls, path, context=None):
        context = context or Context()
        handle = ctypes.c_void_p()
        _check(_lib().tessera_pipeline_load(context._h, os.fsencode(path), ctypes.byref(handle)))
        return cls(context, handle)

    def set(self, name, value):
        """Sets one input (kept for later runs)."""
        lib, key = _lib(), name.encode()
        if isinstance(value, bool):
            _check(lib.tessera_set_bool(self._h, key, int(value)))
        elif isinstance(value, int):
            _check(lib.tessera_set_int(self._h, key, value))
        elif isinstance(value, float):
            _check(lib.tessera_set_float(self._h, key, value))
        elif isinstance(value, (str, os.PathLike)):
            _check(lib.tessera_set_string(self._h, key, os.fsencode(value)))
        elif isinstance(value, Image):
            _check(lib.tessera_set_image_rgb8(self._h, key, value.data, value.width, value.height))
        elif isinstance(value, (list, tuple)):
            _check(lib.tessera_set_string(self._h, key, ",".join(str(v) for v in value).encode()))
        elif _np is not None and isinstance(value, _np.ndarray):
            if value.dtype == _np.uint8 and value.ndim == 3 and value.shape[2] == 3:
                a = _np.ascontiguousarray(value)
                _check(lib.tessera_set_image_rgb8(self._h, key, a.tobytes(), a.shape[1], a.shape[0]))
            else:
                a = _np.ascontiguousarray(value, dtype=_np.float32)
                shape = (ctypes.c_int64 * a.ndim)(*a.shape)
                _check(lib.tessera_set_tensor_f32(self._h, key, a.ctypes.data, shape, a.ndim))
        else:
            raise TypeError("input '%s': cannot pass a %s (str, bool, int, float, list, Image or numpy array)"
                            % (name, type(value).__name__))

    def run(self, progress=None, **inputs):
        """Runs with `inputs` set first; `progress(Progress)` is called at every block and step, and returning
        False from it cancels the run (Cancelled). Returns a Result."""
        for name, value in inputs.items():
            self.set(name, value)
        raised = []

        def on_progress(p, _user):
            try:
                return 1 if progress(Progress(p.contents)) is False else 0
            except BaseException as e:  # never unwind through C: cancel, then re-raise below
                raised.append(e)
                return 1

        callback = _PROGRESS_FN(on_progress) if progress else _PROGRESS_FN()
        handle = ctypes.c_void_p()
        status = _lib().tessera_run(self._h, callback, None, ctypes.byref(handle))
        if raised:
            raise raised[0]
        _check(status)
        return Result(handle)

    def __call__(self, progress=None, **inputs):
        """Runs and returns the images (numpy arrays [H, W, 3] uint8 when numpy is installed, else Image)."""
        return self.run(progress=progress, **inputs).images

    def clear_inputs(self):
        _check(_lib().tessera_clear_inputs(self._h))

    def __del__(self):
        if getattr(self, "_h", None) and _LIB is not None:
            _LIB.tessera_pipeline_free(self._h)
            self._h = None
