"""Built-in ``digits-reid``: person re-identification in Market-1501 layout, made of digit scans.

A "person" is one individual 8x8 scan (not a digit class: two scans of a 3 are two people),
dressed in its own two ink colours (upper and lower half, like a shirt and trousers). Six
"cameras" see people differently: each has its own white balance, contrast, brightness, blur,
ground colour and person scale. Every image also varies the person's position, size and slight
rotation, like detector crops. Recognising a person across cameras takes the scan's shape and
the colours as the camera distorts them.

Layout, as ``Market-1501-v15.09.15.zip`` unpacks (images ``image_size`` tall, half as wide:
128 x 64 by default, Market-1501's crop size)::

    ROOT/bounding_box_train/PPPP_cCsS_FFFFFF_NN.jpg     training people (training scans)
    ROOT/query/...                                      one image per test person and camera
    ROOT/bounding_box_test/...                          the rest of the test people's images, plus
                                                        distractors (0000) and junk (-1)
    ROOT/info.json

Training people are seen by 2-6 cameras, 1-4 images each; test people by 2-6 cameras, 2-4 images
each, so every query has a same-person image from another camera in the gallery. People are added
until about ``num_train`` training and ``num_val`` query + gallery images exist; a tenth of
``num_val`` are distractors (other validation scans, once each) and a twentieth junk (a
fragment of a scan on a camera's background, a bad detection). Test people and distractors
come from the validation scans, disjoint from the training ones. Person ids are a seeded
shuffle of 1..N shared by train and test, as in Market-1501. Deterministic in ``seed``.
"""

from __future__ import annotations

import colorsys
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from noah.data.digits import MIN_IMAGE_SIZE, DigitPools, upscale_scan, split_digit_pools
from noah.errors import ConfigError

__all__ = [
    "Camera", "DEFAULT_IMAGE_SIZE", "DEFAULT_NUM_TRAIN", "DEFAULT_NUM_VAL", "GENERATOR_VERSION", "NUM_CAMERAS",
    "generate_digits_reid", "make_cameras", "render_person",
]

GENERATOR_VERSION = 1
NUM_CAMERAS = 6
DEFAULT_IMAGE_SIZE = 128
DEFAULT_NUM_TRAIN = 1500
DEFAULT_NUM_VAL = 800
_STREAM = 4
_JPEG_QUALITY = 90


@dataclass(frozen=True)
class Camera:
    """How one camera renders people (fractions are of the image height)."""

    gain: tuple[float, float, float]
    contrast: float
    brightness: float
    blur: float
    scale: float
    ground: tuple[int, int, int]


def make_cameras(seed: int) -> list[Camera]:
    """The six cameras of a dataset."""
    rng = np.random.default_rng([seed, _STREAM, 0])
    cameras = []
    for _ in range(NUM_CAMERAS):
        r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.1, 0.4), rng.uniform(0.35, 0.8))
        cameras.append(Camera(
            gain=tuple(float(v) for v in rng.uniform(0.75, 1.25, size=3)), contrast=float(rng.uniform(0.6, 1.0)),
            brightness=float(rng.uniform(-25, 25)), blur=float(rng.uniform(0.0, 0.012)),
            scale=float(rng.uniform(0.72, 0.92)), ground=(int(r * 255), int(g * 255), int(b * 255)),
        ))
    return cameras


@dataclass(frozen=True)
class _Person:
    scan: int  # index in its pool
    upper: tuple[int, int, int]
    lower: tuple[int, int, int]
    shots: tuple[tuple[int, int], ...]  # (camera index, images)


def _outfit_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.95))
    return int(r * 255), int(g * 255), int(b * 255)


def _plan_people(rng: np.random.Generator, scans: list[int], target: int, per_camera: tuple[int, int], pool: str) -> list[_Person]:
    """People from ``scans`` (in order), each seen by 2-6 cameras, until ``target`` images."""
    people: list[_Person] = []
    total = 0
    while total < target:
        if len(people) == len(scans):
            raise ConfigError(f"digits-reid: the {len(scans)} {pool} scans give {total} images, fewer than the {target} asked for")
        cameras = sorted(rng.choice(NUM_CAMERAS, size=int(rng.integers(2, NUM_CAMERAS + 1)), replace=False).tolist())
        shots = tuple((int(c), int(rng.integers(per_camera[0], per_camera[1] + 1))) for c in cameras)
        people.append(_Person(scans[len(people)], _outfit_colour(rng), _outfit_colour(rng), shots))
        total += sum(n for _, n in shots)
    return people


def _ground(rng: np.random.Generator, camera: Camera, height: int, width: int) -> np.ndarray:
    """``(height, width, 3)`` float ground: the camera's colour, lit from above, with a few strokes."""
    light = np.linspace(rng.uniform(1.0, 1.15), rng.uniform(0.7, 0.9), height)[:, None, None]
    image = Image.fromarray(np.clip(np.array(camera.ground) * light * np.ones((1, width, 1)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 3))):
        points = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(2)]
        draw.line(points, fill=tuple(int(v) for v in rng.uniform(0, 255, size=3)), width=max(1, height // 64))
    return np.asarray(image, dtype=np.float64)


def _through_camera(rng: np.random.Generator, pixels: np.ndarray, camera: Camera) -> Image.Image:
    """White balance, contrast and brightness, then blur: what the camera makes of the scene."""
    pixels = pixels * np.array(camera.gain)
    mean = pixels.mean()
    pixels = (pixels - mean) * camera.contrast + mean + camera.brightness + rng.normal(0, 4)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    radius = camera.blur * pixels.shape[0]
    return image.filter(ImageFilter.GaussianBlur(radius)) if radius >= 0.3 else image


def render_person(rng: np.random.Generator, scan: np.ndarray, upper: tuple[int, int, int], lower: tuple[int, int, int],
                  camera: Camera, height: int) -> Image.Image:
    """One ``height`` x ``height // 2`` crop of the person ``scan`` (wearing ``upper``/``lower``)
    as ``camera`` sees it."""
    width = height // 2
    pixels = _ground(rng, camera, height, width)
    person_h = camera.scale * rng.uniform(0.9, 1.05) * height
    person_w = rng.uniform(0.7, 0.95) * width
    # a one-cell empty border so the ink fades out inside the patch (no straight crop edges)
    alpha = upscale_scan(np.pad(scan, 1), round(person_h * 10 / 8), round(person_w * 10 / 8), rng.uniform(-6, 6))
    alpha = np.clip(alpha * rng.uniform(1.2, 1.5), 0.0, 1.0)[:height, :width]
    h, w = alpha.shape
    split = rng.uniform(0.45, 0.6)
    blend = np.clip((np.arange(h) / h - split) * 8 + 0.5, 0, 1)[:, None, None]
    ink = np.array(upper) * (1 - blend) + np.array(lower) * blend
    x = int(np.clip((width - w) // 2 + rng.integers(-width // 12, width // 12 + 1), 0, width - w))
    y = int(np.clip((height - h) // 2 + rng.integers(-height // 16, height // 16 + 1), 0, height - h))
    region = pixels[y:y + h, x:x + w]
    pixels[y:y + h, x:x + w] = region * (1 - alpha[..., None]) + ink * alpha[..., None]
    return _through_camera(rng, pixels, camera)


def _render_junk(rng: np.random.Generator, pool: DigitPools, camera: Camera, height: int) -> Image.Image:
    """A bad detection: a corner of a random scan, large, off-centre, on the camera's ground."""
    width = height // 2
    pixels = _ground(rng, camera, height, width)
    scan = pool.images[rng.integers(len(pool.images))]
    fh, fw = (int(v) for v in rng.integers(2, 5, size=2))
    alpha = upscale_scan(scan[:fh, :fw], round(height * rng.uniform(0.3, 0.6)), round(width * rng.uniform(0.4, 0.9)), 0.0)
    h, w = alpha.shape
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    pixels[y:y + h, x:x + w] = pixels[y:y + h, x:x + w] * (1 - alpha[..., None]) + np.array(_outfit_colour(rng)) * alpha[..., None]
    return _through_camera(rng, pixels, camera)


def generate_digits_reid(
    root: str | os.PathLike,
    seed: int = 0,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> Path:
    """Write the re-ID miniature in Market-1501 layout to ``root`` (which must not exist yet);
    images ``image_size`` tall and half as wide. Same arguments, same bytes."""
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}")
    if num_train < 1 or num_val < 20:
        raise ConfigError(f"digits-reid needs num_train >= 1 and num_val >= 20, got {num_train} and {num_val}")
    root = Path(root)
    folders = {name: root / name for name in ("bounding_box_train", "query", "bounding_box_test")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    pools = split_digit_pools(seed)
    cameras = make_cameras(seed)
    plan = np.random.default_rng([seed, _STREAM, 1])
    train_scans = plan.permutation(len(pools["train"].images)).tolist()
    val_scans = plan.permutation(len(pools["val"].images)).tolist()
    num_distractors, num_junk = num_val // 10, num_val // 20
    train_people = _plan_people(plan, train_scans, num_train, (1, 4), "training")
    test_people = _plan_people(plan, val_scans, num_val - num_distractors - num_junk, (2, 4), "validation")
    distractor_scans = val_scans[len(test_people):len(test_people) + num_distractors]
    if len(distractor_scans) < num_distractors:
        raise ConfigError(f"digits-reid: too few validation scans left for {num_distractors} distractors; lower num_val")
    person_ids = (plan.permutation(len(train_people) + len(test_people)) + 1).tolist()
    frames = [0] * NUM_CAMERAS  # frame counter per camera: keeps every file name unique

    def save(image: Image.Image, folder: str, person_id: int, camera: int) -> None:
        frames[camera] += int(plan.integers(1, 50))
        sequence = 1 + frames[camera] // 5000
        name = f"{person_id:04d}" if person_id >= 0 else "-1"
        image.save(folders[folder] / f"{name}_c{camera + 1}s{sequence}_{frames[camera]:06d}_01.jpg", quality=_JPEG_QUALITY)

    count = 0

    def stream() -> np.random.Generator:
        nonlocal count
        count += 1
        return np.random.default_rng([seed, _STREAM, 2, count])

    for people, pool, first_id in ((train_people, pools["train"], 0), (test_people, pools["val"], len(train_people))):
        for k, person in enumerate(people):
            for camera, shots in person.shots:
                for shot in range(shots):
                    image = render_person(stream(), pool.images[person.scan], person.upper, person.lower, cameras[camera], image_size)
                    folder = "bounding_box_train" if pool is pools["train"] else "query" if shot == 0 else "bounding_box_test"
                    save(image, folder, person_ids[first_id + k], camera)
    for scan in distractor_scans:
        rng = stream()
        camera = int(rng.integers(NUM_CAMERAS))
        image = render_person(rng, pools["val"].images[scan], _outfit_colour(rng), _outfit_colour(rng), cameras[camera], image_size)
        save(image, "bounding_box_test", 0, camera)
    for _ in range(num_junk):
        rng = stream()
        camera = int(rng.integers(NUM_CAMERAS))
        save(_render_junk(rng, pools["val"], cameras[camera], image_size), "bounding_box_test", -1, camera)
    info = {
        "generator": "noah.data.digits_reid", "version": GENERATOR_VERSION, "seed": seed, "num_train": num_train,
        "num_val": num_val, "image_size": image_size, "train_people": len(train_people), "test_people": len(test_people),
        "source": "sklearn.datasets.load_digits scans; one person per scan, train from the training pool, "
                  "test people and distractors from the validation pool",
    }
    (root / "info.json").write_text(json.dumps(info, indent=2))
    return root
