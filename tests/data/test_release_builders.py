"""TFDS builders of the released datasets, on tiny fixtures written in each release's annotation format; frames
stored as JPEG (the default), PNG (lossless: equal to raw) or raw."""
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lrr_jax.data import frame_codec
from lrr_jax.data import datasets
from lrr_jax.data import rationales
from lrr_jax.data import records
from lrr_jax.data.builders import acre as acre_builder
from lrr_jax.data.builders import cater as cater_builder
from lrr_jax.data.builders import something_else as something_else_builder
from lrr_jax.data.builders import star as star_builder
from lrr_jax.data.worlds import acre
from lrr_jax.data.worlds import cater as cater_world
from tests.data import release_fixtures


@pytest.fixture(scope="module")
def acre_release(tmp_path_factory):
  manual = tmp_path_factory.mktemp("acre_release")
  problems = {split: acre.generate(acre.AcreConfig(), 3, seed=i, train=split == "train")
              for i, split in enumerate(("train", "val"))}
  for split, split_problems in problems.items():
    release_fixtures.write_acre_release(manual, split, split_problems)
  return manual, problems


def build_acre(manual, data_dir, config="iid"):
  builder = acre_builder.Acre(config=config, data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder


def test_acre_release_reads_into_records_with_its_labels(acre_release, tmp_path):
  manual, problems = acre_release
  builder = build_acre(manual, tmp_path)
  train = builder.as_data_source("train")
  assert len(train) == 12 and len(builder.as_data_source("val")) == 12
  for index in range(len(train)):
    record = train[index]
    meta = records.read_metadata(record)
    problem = problems["train"][meta["problem"]]
    assert frame_codec.frame_format(record) == "jpeg" and frame_codec.decode(record).shape == (7, 224, 224, 3)
    example = records.read_example(record, "full")
    parsed = rationales.parse_response(example.response_text)
    assert parsed.problems == [] and parsed.answer == acre.ANSWERS[record["label"]]
    assert meta["query_type"] in acre.QUERY_TYPES
    assert any(name in example.response_text for name in problem.names)  # names read from the scenes


def test_acre_rule_matches_the_release_labels_for_set_blickets():
  # A lit panel of two undetermined objects: together they light the machine (ACRE label 2).
  problem = acre.AcreProblem(names={1: "a", 2: "b", 3: "c"}, objects=[], blickets=[],
                             context=[((1, 2), True), ((3,), False)], queries=[], context_frames=None,
                             query_frames=None)
  assert acre.rule_answer(problem, (1, 2, 3)) == "on"
  assert acre.rule_answer(problem, (1,)) == "undetermined"
  assert acre.rule_answer(problem, (3,)) == "off"


@pytest.mark.parametrize("damage,message", [
    (lambda m: (m / "images" / "ACRE_train_000001_03.png").unlink(), "ACRE_train_000001_03.png is missing"),
    (lambda m: (m / "config" / "train.json").unlink(), r"config/train.json is missing"),
    (lambda m: (m / "config" / "train.json").write_text("[[{"), r"train.json is not valid JSON"),
    (lambda m: (m / "images" / "ACRE_train_000000_00.png").write_bytes(b"not a png"), "cannot be decoded"),
])
def test_bad_release_files_are_named_and_earlier_data_survives(acre_release, tmp_path, damage, message):
  manual, _ = acre_release
  good = build_acre(manual, tmp_path, "iid")
  broken = tmp_path / "broken"
  shutil.copytree(manual, broken)
  damage(broken)
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    build_acre(broken, tmp_path, "compositional")
  assert len(good.as_data_source("train")) == 12  # what was written before is intact
  assert not list((tmp_path / "acre" / "compositional").glob("*/*.array_record*"))


@pytest.fixture(scope="module")
def cater_release(tmp_path_factory):
  manual = tmp_path_factory.mktemp("cater_release")
  config = cater_world.CaterConfig(num_frames=8, resolution=32, contain_prob=0.7)
  videos = {"train": cater_world.generate(config, 6, seed=0), "val": cater_world.generate(config, 3, seed=1)}
  release_fixtures.write_cater_release(manual, "train", videos["train"])
  release_fixtures.write_cater_release(manual, "val", videos["val"], offset=100)
  return manual, videos


def build_cater(manual, data_dir):
  config = cater_builder.CaterReleaseConfig(name="t8", num_frames=8, resolution=32)
  builder = cater_builder.Cater(config=config, data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder


def test_cater_release_reads_videos_scenes_and_labels(cater_release, tmp_path):
  manual, videos = cater_release
  builder = build_cater(manual, tmp_path)
  train = builder.as_data_source("train")
  assert len(train) == 6 and len(builder.as_data_source("val")) == 3
  for index in range(len(train)):
    record = train[index]
    n = int(records.read_metadata(record)["video"][len("CLEVR_new_"):-len(".avi")])
    assert record["label"] == videos["train"].label[n]
    # MPEG-4 and JPEG are lossy: the decoded frames are close to the rendered ones, not equal.
    assert np.abs(frame_codec.decode(record).astype(float) - videos["train"].frames[n]).mean() < 12
    full = records.read_example(record, "full")
    parsed = rationales.parse_response(full.response_text)
    assert parsed.problems == [] and parsed.answer == cater_world.answer_text(int(record["label"]))
    # The tracked cell on the last frame (from the scene) agrees with the released class.
    assert f" {parsed.answer}" in parsed.stages["REASONING"].split("frame 7:")[1]
    generated = cater_world.rationale_example(videos["train"], n)
    assert parsed.stages["REASONING"] == rationales.parse_response(generated.response_text).stages["REASONING"]


@pytest.mark.parametrize("damage,message", [
    (lambda m: (m / "videos" / "CLEVR_new_000002.avi").unlink(), "CLEVR_new_000002.avi is missing"),
    (lambda m: (m / "videos" / "CLEVR_new_000001.avi").write_bytes(b"\0" * 64), "cannot be decoded"),
    (lambda m: release_fixtures.write_video(m / "videos" / "CLEVR_new_000001.avi", np.zeros((1, 32, 32, 3), np.uint8)),
     r"CLEVR_new_000001.avi has 1 frame, fewer than the 8 needed"),
    (lambda m: release_fixtures.write_audio(m / "videos" / "CLEVR_new_000001.avi"),
     r"CLEVR_new_000001.avi has no video stream"),
    (lambda m: (m / "lists" / "localize" / "val.txt").write_text("CLEVR_new_000100.avi 99\n"),
     r"val.txt:1: expected '<video> <class in 0..35>'"),
    (lambda m: (m / "scenes" / "CLEVR_new_000003.json").write_text('{"objects": []}'),
     "CLEVR_new_000003.json is malformed"),
])
def test_bad_cater_release_files_are_named(cater_release, tmp_path, damage, message):
  manual, _ = cater_release
  broken = tmp_path / "broken"
  shutil.copytree(manual, broken)
  damage(broken)
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    build_cater(broken, tmp_path / "data")


def build_star(manual, data_dir, frame_format="jpeg"):
  config = star_builder.StarReleaseConfig(name=f"t6_{frame_format}", num_frames=6, resolution=16,
                                          frame_format=frame_format)
  builder = star_builder.Star(config=config, data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder


def test_star_release_turns_situation_graphs_into_rationales(tmp_path):
  manual = tmp_path / "star"
  questions = release_fixtures.write_star_release(manual)
  builder = build_star(manual, tmp_path / "data")
  train = builder.as_data_source("train")
  assert len(train) == 2 and len(builder.as_data_source("val")) == 1
  by_type = {records.read_metadata(train[i])["question_type"]: train[i] for i in range(2)}
  assert set(by_type) == {"Interaction", "Sequence"}
  record = by_type["Sequence"]
  assert record["label"] == 2 and frame_codec.decode(record).shape == (6, 16, 16, 3)
  example = records.read_example(record, "full")
  parsed = rationales.parse_response(example.response_text)
  assert parsed.problems == [] and parsed.answer == "C"
  assert "person holding cup" in parsed.stages["CAPTION"] and "cup on table" in parsed.stages["CAPTION"]
  assert "action: putting a cup somewhere" in parsed.stages["CAPTION"]
  # Keyframe 18 (0.75 s) and 36 (1.5 s) of a clip from 0.5 s to 1.75 s, 6 kept frames of 30.
  frames = [s.frame_index for s in example.response if s.text.startswith("frame ")]
  assert frames == [1, 4]
  assert "A) The cup. B) The table." in example.question[0].text and questions[1]["answer"] == "The book."


@pytest.mark.parametrize("damage,message", [
    (lambda m: (m / "STAR_val.json").unlink(), "STAR_val.json is missing"),
    (lambda m: (m / "videos" / "XYZ34.mp4").unlink(), "XYZ34.mp4 is missing"),
    (lambda m: release_fixtures.write_audio(m / "videos" / "XYZ34.mp4"), r"XYZ34.mp4 has no video stream"),
    (lambda m: release_fixtures.write_video(m / "videos" / "XYZ34.mp4", np.zeros((16, 32, 32, 3), np.uint8)),
     r"XYZ34.mp4 has \d frames? between [\d.]+s and [\d.]+s, fewer than the 6 needed"),
    (lambda m: (m / "STAR_train.json").write_text(
        (m / "STAR_train.json").read_text().replace('"answer": "The book."', '"answer": "A hat."')),
     r"question 1 \(Sequence_T2_7\) is malformed"),
])
def test_bad_star_release_files_are_named(tmp_path, damage, message):
  manual = tmp_path / "star"
  release_fixtures.write_star_release(manual)
  damage(manual)
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    build_star(manual, tmp_path / "data")


def build_something_else(manual, data_dir):
  config = something_else_builder.SomethingElseConfig(name="t5", num_frames=5, resolution=16)
  builder = something_else_builder.SomethingElse(config=config, data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder


def test_something_else_release_tracks_boxes_into_rationales(tmp_path):
  manual = tmp_path / "se"
  release_fixtures.write_something_else_release(manual)
  builder = build_something_else(manual, tmp_path / "data")
  train = builder.as_data_source("train")
  assert len(train) == 2 and len(builder.as_data_source("validation")) == 1
  record = next(train[i] for i in range(2) if records.read_metadata(train[i])["placeholders"] == ["cup"])
  assert record["label"] == 93 and frame_codec.decode(record).shape == (5, 16, 16, 3)
  parsed = rationales.parse_response(records.read_example(record, "full").response_text)
  assert parsed.problems == [] and parsed.answer == "93"
  # Box centres: x from 8/96 to 80/96 of the width (columns 0 -> 5), y = 32/64 (row 3).
  assert "<track> cup 3,0 -> 3,5" in parsed.stages["REASONING"]
  assert parsed.stages["CAPTION"].startswith("frame 0: <detect> cup 3,0; hand 4,0.")


@pytest.mark.parametrize("damage,message", [
    (lambda m: shutil.rmtree(m / "frames" / "1002"), r"video 1002: no frames"),
    (lambda m: (m / "annotations" / "labels.json").write_text('{"Moving something from left to right": "93"}'),
     r"video 1002: template 'Putting something on a surface' is not in labels.json"),
    (lambda m: (m / "annotations" / "bounding_box_smthsmth_part1.json").unlink(), "no bounding_box_smthsmth"),
])
def test_bad_something_else_files_are_named(tmp_path, damage, message):
  manual = tmp_path / "se"
  release_fixtures.write_something_else_release(manual)
  damage(manual)
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    build_something_else(manual, tmp_path / "data")


def test_something_else_boxes_config_writes_quantised_corners(tmp_path):
  """`boxes<N>` through prepare: each detection is the box's corners in N bins (96x64 frames, 12 bins)."""
  from lrr_jax.data import boxes  # pylint: disable=g-import-not-at-top
  from lrr_jax.data import datasets  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "se"
  release_fixtures.write_something_else_release(manual)
  datasets.prepare("something_else", "boxes12", str(tmp_path / "data"), 0, str(manual))
  builder = datasets.builder_for("something_else", "boxes12", str(tmp_path / "data"))
  record = builder.as_data_source("validation")[0]
  caption = rationales.parse_response(records.read_example(record, "full").response_text).stages["CAPTION"]
  assert caption.startswith("frame 0: <detect> box (0,5,1,6); hand (0,7,1,11).")  # x 4..12, y 28..36 / 40..60
  assert all(max(b) < 12 for _, b in boxes.parse_boxes(caption))


def test_png_frames_equal_raw_ones_and_jpeg_ones_are_close_and_smaller(tmp_path):
  """The same STAR release written three ways: PNG decodes to exactly the raw frames, JPEG within 8 levels on
  average (16 px frames of a textured fixture video, a hard case for JPEG's 8x8 blocks); the records say how
  they are stored."""
  manual = tmp_path / "star"
  release_fixtures.write_star_release(manual)
  written = {fmt: build_star(manual, tmp_path / "data", fmt).as_data_source("train") for fmt in ("raw", "png", "jpeg")}
  assert "frame_format" not in written["raw"][0]
  for index in range(len(written["raw"])):
    raw = np.asarray(written["raw"][index]["frames"])
    np.testing.assert_array_equal(frame_codec.decode(written["png"][index]), raw)
    assert np.abs(frame_codec.decode(written["jpeg"][index]).astype(float) - raw).mean() < 8
    assert sum(map(len, written["jpeg"][index]["frames"])) < raw.nbytes


def test_frame_settings_name_their_own_config():
  default = datasets.builder_for("star", "default", "/nowhere").builder_config
  assert (default.name, default.resolution, default.frame_format, default.jpeg_quality) == ("default", 224, "jpeg", 90)
  assert datasets.builder_for("star", "default", "/nowhere", resolution=224).builder_config.name == "default"
  png = datasets.builder_for("star", "default", "/nowhere", frame_format="png", resolution=112).builder_config
  assert png.name.startswith("default_") and (png.resolution, png.frame_format) == (112, "png")
  with pytest.raises(ValueError, match="frame_format='gif'"):
    datasets.builder_for("star", "default", "/nowhere", frame_format="gif").info  # pylint: disable=expression-not-assigned
