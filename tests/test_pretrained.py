"""Starting from PANNs: the front end against librosa, and the loader on a state dict with PANNs'
key names and shapes, built here (at a narrow width; PANNs' own is 64).

PANNs' Cnn14 (qiuqiangkong/audioset_tagging_cnn, pytorch/models.py) names its layers ``bn0``,
``conv_block<b>.conv1/conv2`` (3x3, no bias) and ``conv_block<b>.bn1/bn2``, then ``fc1`` and
``fc_audioset``, with torchlibrosa's ``spectrogram_extractor.stft.conv_real/conv_imag`` and
``logmel_extractor.melW``; its front end is a centred, reflect-padded Hann STFT, librosa's mel
filters (Slaney) and power_to_db(ref=1.0, amin=1e-10, top_db=None).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cilaudio.features import FeatureSettings, LogMel
from cilaudio.model import CNN14, ModelSettings
from cilaudio.pretrained import load_panns

PANNS_FEATURES = dict(sample_rate=32000, n_fft=1024, win_length=1024, hop_length=320, n_mels=64,
                      f_min=50.0, f_max=14000.0)


def _wave(seconds=1.0, sr=32000):
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t)
            + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_the_panns_front_end_is_librosas():
    librosa = pytest.importorskip("librosa")
    wave = _wave()
    ours = LogMel(FeatureSettings(**PANNS_FEATURES, front_end="panns"))(torch.from_numpy(wave)).numpy()
    power = np.abs(librosa.stft(wave.astype(np.float64), n_fft=1024, hop_length=320, win_length=1024,
                                window="hann", center=True, pad_mode="reflect")) ** 2  # (bins, frames)
    mel = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50.0, fmax=14000.0)  # Slaney scale and norm
    expected = librosa.power_to_db(mel @ power, ref=1.0, amin=1e-10, top_db=None).T  # (frames, mels)
    assert ours.shape == expected.shape == (101, 64)
    np.testing.assert_allclose(ours, expected, atol=2e-3)  # dB, float32 against float64
    # a negative control: the papers' front end is another function of the same audio
    papers = LogMel(FeatureSettings(**PANNS_FEATURES))(torch.from_numpy(wave)).numpy()
    assert np.abs(papers - expected).max() > 1.0


def test_an_unknown_front_end_is_refused():
    with pytest.raises(ValueError, match="front_end"):
        FeatureSettings(front_end="htk")


def panns_state(width: int, *, n_mels: int = 64, classes: int = 527, seed: int = 0) -> dict[str, torch.Tensor]:
    """A PANNs Cnn14 state dict at ``width`` (64 in PANNs), random values, PANNs' names and shapes."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {
        "spectrogram_extractor.stft.conv_real.weight": torch.randn(513, 1, 1024, generator=g),
        "spectrogram_extractor.stft.conv_imag.weight": torch.randn(513, 1, 1024, generator=g),
        "logmel_extractor.melW": torch.rand(513, n_mels, generator=g),
    }

    def bn(prefix, c):
        state.update({f"{prefix}.weight": torch.rand(c, generator=g) + 0.5, f"{prefix}.bias": torch.randn(c, generator=g),
                      f"{prefix}.running_mean": torch.randn(c, generator=g),
                      f"{prefix}.running_var": torch.rand(c, generator=g) + 0.5,
                      f"{prefix}.num_batches_tracked": torch.tensor(1000 + c)})

    bn("bn0", n_mels)
    c_in = 1
    for b, mult in enumerate((1, 2, 4, 8, 16, 32), start=1):
        c = width * mult
        state[f"conv_block{b}.conv1.weight"] = torch.randn(c, c_in, 3, 3, generator=g) * 0.1
        state[f"conv_block{b}.conv2.weight"] = torch.randn(c, c, 3, 3, generator=g) * 0.1
        bn(f"conv_block{b}.bn1", c)
        bn(f"conv_block{b}.bn2", c)
        c_in = c
    state["fc1.weight"] = torch.randn(c_in, c_in, generator=g)
    state["fc1.bias"] = torch.randn(c_in, generator=g)
    state["fc_audioset.weight"] = torch.randn(classes, c_in, generator=g)
    state["fc_audioset.bias"] = torch.randn(classes, generator=g)
    return state


@pytest.fixture
def panns_file(tmp_path):
    path = tmp_path / "Cnn14_narrow.pth"
    torch.save({"model": panns_state(4), "iteration": 0}, path)
    return path


def _model(norm, width=4):
    torch.manual_seed(1)
    return CNN14(ModelSettings(norm=norm, width=width, n_mels=64, n_classes=3))


def test_batchnorm_takes_every_weight_of_the_blocks(panns_file):
    theirs = panns_state(4)
    model = _model("bn")
    classifier = model.classifier.weight.detach().clone()
    record = load_panns(model, panns_file)
    ours = model.state_dict()
    for b in range(1, 7):
        for conv in ("conv1", "conv2"):
            assert torch.equal(ours[f"block{b}.{conv}.weight"], theirs[f"conv_block{b}.{conv}.weight"])
        for i in (1, 2):
            for part in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                assert torch.equal(ours[f"block{b}.norm{i}.{part}"], theirs[f"conv_block{b}.bn{i}.{part}"])
    assert all(torch.equal(ours[f"bn0.{p}"], theirs[f"bn0.{p}"]) for p in ("weight", "bias", "running_mean", "running_var"))
    assert torch.equal(model.classifier.weight, classifier)  # the classifier is this run's own
    assert record["not_used"] == ["fc1", "fc_audioset", "logmel_extractor", "spectrogram_extractor.stft.conv_imag",
                                  "spectrogram_extractor.stft.conv_real"]
    assert record["n_tensors_loaded"] == 5 + 6 * (2 + 2 * 5)
    import hashlib
    assert record["sha256"] == hashlib.sha256(panns_file.read_bytes()).hexdigest()


def test_block1_computes_panns_conv_block(panns_file):
    """Block 1 of the loaded model, in eval mode, against PANNs' ConvBlock written out with
    torch.nn.functional on the file's tensors: conv1 -> bn1 -> relu -> conv2 -> bn2 -> relu ->
    2x2 average pooling (a swap of bn1 and bn2, or of the two convolutions, would show)."""
    s = panns_state(4)
    model = _model("bn")
    load_panns(model, panns_file)
    model.eval()
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))

    def bn(h, p):
        return F.batch_norm(h, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
                            training=False, eps=1e-5)

    h = F.relu(bn(F.conv2d(x, s["conv_block1.conv1.weight"], padding=1), "conv_block1.bn1"))
    h = F.relu(bn(F.conv2d(h, s["conv_block1.conv2.weight"], padding=1), "conv_block1.bn2"))
    expected = F.avg_pool2d(h, 2)
    with torch.no_grad():
        torch.testing.assert_close(model.block1(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["gn", "cn"])
def test_group_and_continual_norm_take_the_convolutions_only(panns_file, norm):
    theirs = panns_state(4)
    model = _model(norm)
    fresh = {k: v.clone() for k, v in _model(norm).state_dict().items()}
    record = load_panns(model, panns_file)
    ours = model.state_dict()
    for key, value in ours.items():
        if ".conv" in key:
            b, conv = key.split(".")[0][len("block"):], key.split(".")[1]
            assert torch.equal(value, theirs[f"conv_block{b}.{conv}.weight"]), key
        elif key.startswith("bn0."):
            assert torch.equal(value, theirs[key]), key
        else:  # the norms and the classifier start as a fresh model's
            assert torch.equal(value, fresh[key]), key
    assert "conv_block3.bn2" in record["not_used"] and "fc1" in record["not_used"]


def test_a_bare_state_dict_loads_too(tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(panns_state(4), path)
    model = _model("bn")
    load_panns(model, path)
    assert torch.equal(model.block6.conv2.weight, panns_state(4)["conv_block6.conv2.weight"])


def test_wrong_files_are_refused_with_the_key(tmp_path, panns_file):
    model = _model("bn", width=8)
    before = model.block1.conv1.weight.detach().clone()
    with pytest.raises(ValueError, match=r"'conv_block1.conv1.weight' has shape \(4, 1, 3, 3\).*width 8"):
        load_panns(model, panns_file)
    assert torch.equal(model.block1.conv1.weight, before)  # nothing copied
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_panns(_model("bn"), junk)
    other = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, other)
    with pytest.raises(ValueError, match="not a PANNs CNN14 checkpoint"):
        load_panns(_model("bn"), other)
    attention = tmp_path / "att.pth"
    torch.save({"model": {**panns_state(4), "att_block.att.weight": torch.zeros(2)}}, attention)
    with pytest.raises(ValueError, match="att_block.att.weight.*another PANNs model"):
        load_panns(_model("bn"), attention)
    with pytest.raises(FileNotFoundError, match="zenodo"):
        load_panns(_model("bn"), tmp_path / "missing.pth")
