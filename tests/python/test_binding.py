"""The Python binding (python/tessera) on tiny-sd, run by CTest: python3 tests/python/test_binding.py.
TESSERA_LIBRARY names the libtessera.so under test; TESSERA_SOURCE_DIR the source tree."""
import os
import sys
import tempfile

src = os.environ["TESSERA_SOURCE_DIR"]
sys.path.insert(0, os.path.join(src, "python"))
import tessera  # noqa: E402

recipe = os.path.join(src, "recipes", "sd", "auto.yaml")
tiny_sd = os.path.join(src, "tests", "fixtures", "parity", "models", "tiny-sd")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def pixels(img):
    return img.tobytes() if hasattr(img, "tobytes") else img.data


check(tessera.version().count(".") == 2, "version() is major.minor.patch: " + tessera.version())

pipe = tessera.Pipeline.from_recipe(recipe)
events = []
images = pipe(prompt="a red circle", seed=3, model=tiny_sd, num_inference_steps=3, progress=events.append)
check(len(images) == 1, "one image")
first = images[0]
shape = (first.shape[0], first.shape[1]) if hasattr(first, "shape") else (first.height, first.width)
check(shape == (64, 64), "64x64 pixels, got %r" % (shape,))
steps = [e for e in events if e.event == "step"]
check([e.step for e in steps] == [0, 1, 2] and all(e.total == 3 for e in steps), "three step events")
starts = [e.path for e in events if e.event == "block_start"]
check("text_encoder" in starts and "decode" in starts, "block events include the text encoder and the decoder")

again = pipe(seed=3)  # inputs stay set between runs
check(pixels(again[0]) == pixels(first), "same seed, same pixels")
other = pipe(seed=4)
check(pixels(other[0]) != pixels(first), "another seed, other pixels")

# Cancel: returning False from the callback.
try:
    pipe(progress=lambda p: not (p.event == "step" and p.step == 1))
    check(False, "cancel raises Cancelled")
except tessera.Cancelled as e:
    check(e.status == 10 and e.status_name == "cancelled", "cancel raises Cancelled (status 10)")

# An exception in the callback cancels the run and reaches the caller.
class Stop(Exception):
    pass


def boom(p):
    raise Stop()


try:
    pipe(progress=boom)
    check(False, "a callback's exception reaches the caller")
except Stop:
    check(True, "a callback's exception reaches the caller")

# Bad input: a clear error with the status of the CLI's exit code and a message naming the input.
try:
    pipe.set("num_inference_stepz", 3)
    check(False, "unknown input raises")
except tessera.Error as e:
    check(e.status == 5 and "num_inference_steps" in str(e), "unknown input: status 5, did-you-mean: " + str(e))
try:
    pipe.set("seed", object())
    check(False, "unsupported type raises TypeError")
except TypeError:
    check(True, "unsupported type raises TypeError")

# Image inputs: an Image (RGB8 buffer) and a file path give the same image2image run.
res = pipe.run(seed=3)
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "init.png")
    res.write_png(0, path)
    if hasattr(res.images[0], "shape"):
        init = tessera.Image(64, 64, res.images[0].tobytes())
    else:
        init = res.images[0]
    own = os.path.join(tmp, "own.png")
    init.save_png(own)
    a = pipe(image=path, strength=0.6)[0]
    b = pipe(image=init, strength=0.6)[0]
    c = pipe(image=own, strength=0.6)[0]
    check(pixels(a) == pixels(b), "image from a file == image from an RGB8 buffer")
    check(pixels(a) == pixels(c), "Image.save_png writes the pixels the engine reads back")
    check(pixels(a) != pixels(first), "image2image changed the picture")
check(res.int("seed") == 3, "the seed output")
t = res.tensor("images")
dims = t.shape if hasattr(t, "shape") else t[0]
check(tuple(dims) == (1, 3, 64, 64), "images as a float tensor [1, 3, 64, 64]")
check(pipe.context.loaded_bytes > 0, "the context holds the loaded models")

print("%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
