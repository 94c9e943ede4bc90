"""A real TensorBoard server reads what training wrote: scalars, images, histograms, graph, hparams."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from conftest import QUIET_TF, counter_settings, train_counter

SIZES = (4, 8)
pytestmark = pytest.mark.slow  # a real TensorBoard server, started in its own process


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("tb_logs"))
    for size in SIZES:
        train_counter(
            counter_settings(
                logdir,
                f"sweep/lstm_size_{size}",
                units=size,
                epochs=20,
                run_options={"eval_every": 10, "histogram_every": 10, "image_every": 10},
            )
        )
    return logdir


@pytest.fixture(scope="module")
def server(sweep):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            sweep,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--load_fast=false",
            "--reload_interval",
            "1",
        ],
        env={**os.environ, **QUIET_TF},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = None
        deadline = time.time() + 120
        while url is None and time.time() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                pytest.fail("tensorboard exited before serving")
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            url = found.group(1) if found else None
        assert url, "tensorboard did not print its address"
        expected_runs = {f"sweep/lstm_size_{size}/{split}" for size in SIZES for split in ("train", "validation")}
        while time.time() < deadline and not expected_runs <= set(get_json(url, "/data/runs")):
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def get_json(base, path, **query):
    address = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(address, timeout=30) as response:
        return json.loads(response.read())


def test_scalars_have_both_splits_and_every_evaluation_step(server):
    for size in SIZES:
        for split in ("train", "validation"):
            for tag in ("error", "mean_square_error"):
                run = f"sweep/lstm_size_{size}/{split}"
                points = get_json(server, "/data/plugin/scalars/scalars", run=run, tag=tag)
                assert [step for _, step, _ in points] == [10, 20]
                assert all(value >= 0 for _, _, value in points)


def test_gate_heat_map_images(server):
    run = "sweep/lstm_size_8/validation"
    tags = get_json(server, "/data/plugin/images/tags")[run]
    assert {"gates/++I--0+", "gates/+I-0I+-"} <= set(tags)
    images = get_json(server, "/data/plugin/images/images", run=run, tag="gates/++I--0+")
    assert [image["step"] for image in images] == [10, 20]
    query = images[-1]["query"]
    with urllib.request.urlopen(f"{server}/data/plugin/images/individualImage?{query}", timeout=30) as response:
        assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_histograms_of_weights_and_gradients(server):
    run = "sweep/lstm_size_4/train"
    tags = get_json(server, "/data/plugin/histograms/tags")[run]
    for gate in "figo":
        assert f"weights/layer_0/W_{gate}" in tags and f"gradients/layer_0/b_{gate}" in tags
    histogram = get_json(server, "/data/plugin/histograms/histograms", run=run, tag="weights/layer_0/W_f")
    assert [entry[1] for entry in histogram] == [10, 20]
    buckets = histogram[-1][2]
    assert sum(count for _, _, count in buckets) == pytest.approx((3 + 4) * 4)  # every weight counted once


def test_graph_of_the_training_step(server):
    runs = get_json(server, "/data/plugin/graphs/info")
    assert runs["sweep/lstm_size_4/train"]["run_graph"]
    address = f"{server}/data/plugin/graphs/graph?" + urllib.parse.urlencode(
        {"run": "sweep/lstm_size_4/train", "conceptual": "false"}
    )
    with urllib.request.urlopen(address, timeout=30) as response:
        graph = response.read().decode()
    assert "node {" in graph and "ResourceApplyAdam" in graph  # the whole step, update included


def test_hparams_session_groups_list_the_swept_sizes(server):
    request = urllib.request.Request(
        f"{server}/data/plugin/hparams/session_groups",
        data=json.dumps(
            {
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                "colParams": [],
                "startIndex": 0,
                "sliceSize": 100,
            }
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        groups = json.loads(response.read())["sessionGroups"]
    sizes = sorted(int(group["hparams"]["units"]) for group in groups)  # --lstm_size is ModelConfig.units
    assert sizes == list(SIZES)
    for group in groups:
        assert group["hparams"]["target"] == "running" and group["hparams"]["learning_rate"] == 0.03
