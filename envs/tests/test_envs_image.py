"""Problems shown as images: rendered text tasks grade as their text twins, images are
reproducible and follow the style knobs, and image datasets load from every form or fail
naming the row and column."""

from __future__ import annotations

import base64
import io
import json
import pickle

import gymnasium as gym
import k15_envs  # noqa: F401 - registers the envs
import numpy as np
import pytest
from k15_envs import DatasetError
from k15_envs.render import RenderStyle, decode_image, png_bytes, render_text
from PIL import Image, ImageDraw


def _pixels(problem) -> np.ndarray:
    return np.asarray(decode_image(problem.metadata["image"]), dtype=np.int16)


def test_rendered_problems_grade_exactly_as_their_text_twins():
    rendered = gym.make("k15/RenderedArithmetic-v0", difficulty=[1, 2, 3], size=30).unwrapped
    text = gym.make("k15/Arithmetic-v0", difficulty=[1, 2, 3], size=30).unwrapped
    try:
        for i in range(30):
            image_problem, text_problem = rendered.problem(i), text.problem(i)
            assert image_problem.id == f"rendered/{text_problem.id}"
            assert image_problem.answer == text_problem.answer
            assert image_problem.difficulty == text_problem.difficulty
            # the image shows the question only; the instruction goes beside it as text
            assert text_problem.prompt.startswith(image_problem.metadata["question"])
            assert "\\boxed" not in image_problem.metadata["question"]
            assert "image" in image_problem.prompt
            for response in (f"\\boxed{{{text_problem.answer}}}", "\\boxed{-12345}", "no idea"):
                assert rendered.verify(image_problem, response) == text.verify(
                    text_problem, response
                )
    finally:
        rendered.close()
        text.close()


def test_the_image_is_the_question_drawn_under_the_seed():
    env = gym.make("k15/RenderedArithmetic-v0", difficulty=2, size=10, render={"noise": 8.0})
    problem = env.unwrapped.problem(4)
    again = render_text(problem.metadata["question"], env.unwrapped.style, (0, 4))
    assert png_bytes(again) == problem.metadata["image"]
    obs, info = env.reset(options={"problem_index": 4})
    assert env.observation_space.contains(obs)
    assert np.array_equal(obs["image"], np.asarray(again)) and obs["text"] == problem.prompt
    # another render seed: other noise, same problem
    other = gym.make(
        "k15/RenderedArithmetic-v0", difficulty=2, size=10, render={"noise": 8.0}, render_seed=1
    ).unwrapped.problem(4)
    assert other.metadata["question"] == problem.metadata["question"]
    assert not np.array_equal(_pixels(other), _pixels(problem))
    env.close()


def test_style_knobs_change_the_pixels():
    question = "Calculate 47 + 25."
    plain = np.asarray(render_text(question, RenderStyle(), 0), dtype=np.int16)
    assert plain.shape == (224, 448, 3)
    ink = plain < 128
    assert 100 < ink.sum() < plain.size // 10  # text was drawn, on a mostly white canvas
    rows = np.flatnonzero(ink.any(axis=(1, 2)))
    assert rows.min() >= 16  # inside the margin

    noisy = np.asarray(render_text(question, RenderStyle(noise=20.0), 0), dtype=np.int16)
    background = ~ink.any(axis=2)
    assert noisy[background].std() > 10 > plain[background].std()
    rotated = np.asarray(render_text(question, RenderStyle(rotate=10.0), 0), dtype=np.int16)
    assert not np.array_equal(rotated, plain)
    shifted = np.asarray(render_text(question, RenderStyle(jitter=8), 3), dtype=np.int16)
    assert not np.array_equal(shifted, plain)
    bigger = np.asarray(render_text(question, RenderStyle(font_size=40), 0), dtype=np.int16)
    assert (bigger < 128).sum() > 2 * ink.sum()


def test_long_text_shrinks_then_fails_naming_the_problem():
    long_question = " ".join(["seventeen"] * 60)
    fitted = render_text(long_question, RenderStyle(), 0)  # shrinks the font until it fits
    assert fitted.size == (448, 224)
    with pytest.raises(ValueError, match=r"problem math/x/1.*does not fit a 64x64 image"):
        render_text(
            long_question, RenderStyle(width=64, height=64, margin=4), 0, what="problem math/x/1"
        )
    rows = [{"problem": long_question * 3, "answer": "1"}]
    env = gym.make("k15/RenderedMath-v0", dataset=rows, num_workers=1, render={"width": 96,
                   "height": 64, "margin": 4})  # fmt: skip
    with pytest.raises(ValueError, match=r"math/rows/00000.*raise render.width/height"):
        env.unwrapped.problem(0)
    env.close()


def test_bad_style_and_task_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour'\]"):
        gym.make("k15/RenderedArithmetic-v0", render={"colour": 3})
    with pytest.raises(ValueError, match="bad noise"):
        gym.make("k15/RenderedArithmetic-v0", render={"noise": -1.0})
    with pytest.raises(ValueError, match="not a registered env id"):
        gym.make("k15/Rendered-v0", task="k15/NoSuch-v0")
    with pytest.raises(ValueError, match="cannot load font"):
        render_text("1 + 1", RenderStyle(font="/no/such/font.ttf"), 0)


def test_any_text_task_renders_and_keeps_its_verifier():
    env = gym.make("k15/Rendered-v0", task="k15/Countdown-v0", size=5, num_workers=1).unwrapped
    try:
        problem = env.problem(0)
        assert problem.id.startswith("rendered/") and problem.metadata["question"]
        expression = problem.answer.replace("*", " \\times ")
        assert env.verify(problem, f"\\boxed{{{expression}}}").correct
        assert pickle.loads(pickle.dumps(problem)) == problem
        assert env.render_mode is None
    finally:
        env.close()


def _png(color: str, size=(40, 30)) -> bytes:
    image = Image.new("RGB", size, color)
    ImageDraw.Draw(image).rectangle((5, 5, 20, 20), fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_qa_reads_paths_bytes_data_urls_and_hf_structs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(_png("red"))
    url = "data:image/png;base64," + base64.b64encode(_png("blue")).decode()
    lines = [
        {"image": "imgs/a.png", "question": "How many squares?", "answer": "1"},
        {"image": url, "question": "What is 2+2?", "answer": 4},
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    env = gym.make("k15/ImageQA-v0", dataset=str(path), num_workers=1, image_size=(60, 80))
    first, second = env.unwrapped.problem(0), env.unwrapped.problem(1)
    assert first.metadata["image"] == _png("red") and second.metadata["image"] == _png("blue")
    obs, _ = env.reset(options={"problem_index": 0})
    assert obs["image"].shape == (60, 80, 3) and env.observation_space.contains(obs)
    # 40x30 scaled by 2 fills 80x60: the black square (5..20) lands at 10..40
    assert obs["image"][50, 70].tolist() == [255, 0, 0]
    assert obs["image"][20, 20].tolist() == [0, 0, 0]
    assert env.unwrapped.verify(second, "so \\boxed{4}").correct
    assert not env.unwrapped.verify(second, "\\boxed{5}").correct
    env.close()

    table = pa.table(
        {
            "image": [
                {"bytes": _png("green"), "path": None},
                {"bytes": None, "path": str(tmp_path / "imgs" / "a.png")},
            ],
            "question": ["q1", "q2"],
            "answer": ["3", "\\frac{1}{2}"],
        }
    )
    pq.write_table(table, tmp_path / "qa.parquet")
    env = gym.make("k15/ImageQA-v0", dataset=str(tmp_path / "qa.parquet"), num_workers=1)
    assert env.unwrapped.problem(0).metadata["image"] == _png("green")
    assert env.unwrapped.problem(1).metadata["image"] == _png("red")
    assert env.unwrapped.verify(env.unwrapped.problem(1), "\\boxed{0.5}").correct
    env.close()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("missing.png", r"row 1.*image.*image file not found"),
        ("data:image/png;base64,@@@", r"row 1.*image.*bad base64"),
        (12, r"row 1.*image.*expected an image path"),
        ("not_an_image.png", r"row 1.*image.*not a readable image"),
    ],
)
def test_image_qa_bad_images_name_the_row_and_column(tmp_path, image, message):
    (tmp_path / "ok.png").write_bytes(_png("red"))
    (tmp_path / "not_an_image.png").write_text("hello")
    rows = [
        {"image": "ok.png", "question": "q", "answer": "1"},
        {"image": image, "question": "q2", "answer": "2"},
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DatasetError, match=message):
        gym.make("k15/ImageQA-v0", dataset=str(path), num_workers=1)


def test_image_qa_splits_are_disjoint_and_cover_the_rows():
    train = gym.make("k15/ImageQA-v0", split="train", test_fraction=0.3, num_workers=1).unwrapped
    test = gym.make("k15/ImageQA-v0", split="test", test_fraction=0.3, num_workers=1).unwrapped
    full = gym.make("k15/ImageQA-v0", num_workers=1).unwrapped
    try:
        train_ids = {train.problem(i).id for i in range(len(train))}
        test_ids = {test.problem(i).id for i in range(len(test))}
        assert train_ids and test_ids and not train_ids & test_ids
        assert train_ids | test_ids == {full.problem(i).id for i in range(len(full))}
    finally:
        for env in (train, test, full):
            env.close()


def test_bundled_sample_answers_are_right():
    """The 12 bundled rows: the answer in each row is what its image shows (counted here
    from the pixels: circles by color, bars by height)."""
    env = gym.make("k15/ImageQA-v0", num_workers=1).unwrapped
    try:
        assert len(env) == 12
        for i in range(len(env)):
            problem = env.problem(i)
            pixels = np.asarray(decode_image(problem.metadata["image"]), dtype=np.int16)
            question = problem.metadata["question"]
            if "circles" in question:
                color = question.split()[2]
                target = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 160, 60)}[
                    color
                ]
                mask = (np.abs(pixels - target).sum(axis=2) < 30).astype(np.uint8)
                counted = _components(mask)
            else:
                dark = pixels.sum(axis=2) < 3 * 120
                heights = [dark[:, x].sum() for x in (35, 80, 125)]
                counted = sum(round(h / 18) for h in heights)
            assert str(counted) == problem.answer, (problem.id, counted)
    finally:
        env.close()


def _components(mask: np.ndarray) -> int:
    """Connected components of a 0/1 mask (4-neighbour flood fill)."""
    seen = np.zeros_like(mask, dtype=bool)
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        count += 1
        stack = [(y, x)]
        while stack:
            cy, cx = stack.pop()
            if not (0 <= cy < mask.shape[0] and 0 <= cx < mask.shape[1]):
                continue
            if seen[cy, cx] or not mask[cy, cx]:
                continue
            seen[cy, cx] = True
            stack += [(cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)]
    return count
