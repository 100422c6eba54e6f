"""``metrics.evaluate(..., convention=...)`` and ``ifcnn-eval --convention``.

Each convention reproduces a public suite's code under the default metric names. The
expected values here are independent NumPy formulas written from those files or
analytic cases, never outputs of the functions under test. (The agreement with
CDDFuse's ``utils/Evaluator.py`` run unchanged is recorded in docs/metrics.md; its code
is not part of this repository.)"""

from __future__ import annotations

import csv
import math
from fractions import Fraction

import numpy as np
import pytest

from ifcnn_jax import metrics
from ifcnn_jax.cli.evaluate import main
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import write_image

SHAPE = (24, 32)
QABF_TG, QABF_TA, QABF_KA, QABF_DA = 0.9994, 0.9879, -22.0, 0.8


def _group(seed: int = 0, shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Two random uint8 sources and a fused image between them."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 61, shape), 0, 255).astype(np.uint8)
    fused = ((a.astype(int) * 3 + b.astype(int)) // 4).astype(np.uint8)
    return np.stack([a, b]), fused


def _matlab_gradient(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gy, gx = np.gradient(x.astype(np.float64))  # central inside, one-sided at the borders
    return gx, gy


def _mi_nats(x: np.ndarray, y: np.ndarray) -> float:
    joint, _, _ = np.histogram2d(x.ravel(), y.ravel(), bins=256, range=[[-0.5, 255.5]] * 2)
    p = joint / joint.sum()
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / np.outer(px, py)[nz])))


class TestNamesAndRefusals:
    def test_the_five_conventions(self):
        assert metrics.CONVENTIONS == ("paper", "vifb", "tang", "liu", "cddfuse")
        assert set(metrics.CONVENTION_METRICS) == set(metrics.CONVENTIONS)

    def test_every_convention_uses_registry_names_and_names_its_code(self):
        for convention, table in metrics.CONVENTION_METRICS.items():
            assert table, convention
            for name, rule in table.items():
                assert name in metrics.KNOWN_METRICS, (convention, name)
                assert rule.code, (convention, name)
                # a metric computed differently says how
                assert (rule.fn is None) == (rule.differs == ""), (convention, name)

    def test_paper_is_the_default_definition_of_every_metric(self):
        paper = metrics.CONVENTION_METRICS["paper"]
        assert set(paper) == set(metrics.KNOWN_METRICS)
        assert all(rule.fn is None for rule in paper.values())
        sources, fused = _group()
        names = ["EN", "MI", "PSNR", "Qabf"]
        assert metrics.evaluate(sources, fused, names=names, convention="paper") == metrics.evaluate(
            sources, fused, names=names
        )

    def test_unknown_convention(self):
        sources, fused = _group()
        with pytest.raises(IFCNNError, match="unknown convention 'matlab'.*paper, vifb, tang, liu, cddfuse"):
            metrics.evaluate(sources, fused, names=["EN"], convention="matlab")

    @pytest.mark.parametrize(
        ("convention", "name", "reason"),
        [
            ("tang", "SSIM_mean", "built-in ssim"),
            ("tang", "FMI_pixel", "'edge'"),
            ("liu", "Qabf", "metricXydeas"),
            ("vifb", "Q_TE", "has no Q_TE"),
            ("cddfuse", "Qcb", "has no Qcb"),
        ],
    )
    def test_a_metric_the_suite_does_not_reproduce_is_refused(self, convention, name, reason):
        sources, fused = _group()
        with pytest.raises(
            IFCNNError, match=f"metric {name} is not reproduced under convention '{convention}'"
        ):
            metrics.evaluate(sources, fused, names=[name], convention=convention)
        with pytest.raises(IFCNNError, match=reason):
            metrics.evaluate(sources, fused, names=[name], convention=convention)

    def test_default_names_are_the_suites_metrics(self):
        sources, fused = _group()
        values = metrics.evaluate(sources, fused, convention="cddfuse")
        expected = ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "SSIM_sum", "CC", "PSNR", "MSE", "Qabf"]
        assert sorted(values) == sorted(expected)
        assert list(values) == [n for n in metrics.NO_REFERENCE_METRICS if n in expected]  # registry order


class TestCDDFuse:
    """utils/Evaluator.py of MMIF-CDDFuse."""

    def test_ag_divides_by_all_pixels(self):
        sources, fused = _group(1)
        gx, gy = _matlab_gradient(fused)
        expected = np.mean(np.sqrt((gx**2 + gy**2) / 2))
        got = metrics.evaluate(sources, fused, names=["AG"], convention="cddfuse")["AG"]
        assert got == pytest.approx(expected, rel=1e-6)
        paper = metrics.evaluate(sources, fused, names=["AG"])["AG"]
        h, w = SHAPE
        assert paper == pytest.approx(expected * h * w / ((h - 1) * (w - 1)), rel=1e-6)

    def test_sf_averages_over_the_differences(self):
        sources, fused = _group(2)
        f = fused.astype(np.float64)
        expected = math.sqrt(np.mean(np.diff(f, axis=1) ** 2) + np.mean(np.diff(f, axis=0) ** 2))
        got = metrics.evaluate(sources, fused, names=["SF"], convention="cddfuse")["SF"]
        assert got == pytest.approx(expected, rel=1e-6)

    def test_psnr_peak_is_the_fused_maximum(self):
        a = np.full(SHAPE, 100, np.uint8)
        b = np.full(SHAPE, 120, np.uint8)
        fused = np.full(SHAPE, 110, np.uint8)
        fused[0, 0] = 200  # the peak; MSE = mean of the two MSEs
        mse = (np.mean((fused - 100.0) ** 2) + np.mean((fused - 120.0) ** 2)) / 2
        got = metrics.evaluate([a, b], fused, names=["PSNR", "MSE"], convention="cddfuse")
        assert got["PSNR"] == pytest.approx(10 * math.log10(200.0**2 / mse), rel=1e-6)
        assert got["MSE"] == pytest.approx(mse, rel=1e-6)

    def test_mi_is_in_nats(self):
        sources, fused = _group(3)
        expected = _mi_nats(sources[0], fused) + _mi_nats(sources[1], fused)
        got = metrics.evaluate(sources, fused, names=["MI"], convention="cddfuse")["MI"]
        assert got == pytest.approx(expected, rel=1e-5)
        bits = metrics.evaluate(sources, fused, names=["MI"])["MI"]
        assert bits == pytest.approx(expected / math.log(2), rel=1e-5)

    def test_a_constant_source_counts_as_vifp_one(self):
        rng = np.random.default_rng(4)
        b = rng.integers(0, 256, (48, 48)).astype(np.uint8)
        a = np.full_like(b, 90)
        fused = b  # VIFp(B, F = B) = 1; VIFp of the constant source is 0/0
        got = metrics.evaluate([a, b], fused, names=["VIF"], convention="cddfuse")["VIF"]
        assert got == pytest.approx(2.0, rel=1e-5)  # float32 VIFp(B, B) is 1 - 3e-6
        # (the default gives NaN here: docs/metrics.md, VIF)

    @staticmethod
    def _skimage_ssim_float64(x: np.ndarray, y: np.ndarray) -> float:
        """skimage's defaults written out in float64: 7x7 box, sample covariance,
        data_range 2 (float dtype), mean over the windows inside the image."""
        x, y = x.astype(np.float64), y.astype(np.float64)
        win = np.lib.stride_tricks.sliding_window_view

        def box(z):
            return win(z, (7, 7)).mean(axis=(-2, -1))

        ux, uy = box(x), box(y)
        norm = 49 / 48
        vx, vy = norm * (box(x * x) - ux**2), norm * (box(y * y) - uy**2)
        vxy = norm * (box(x * y) - ux * uy)
        c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
        s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        return float(s.mean())

    def test_ssim_is_skimages_default(self):
        sources, fused = _group(5)
        expected = sum(self._skimage_ssim_float64(fused, s) for s in sources)
        got = metrics.evaluate(sources, fused, names=["SSIM_sum"], convention="cddfuse")["SSIM_sum"]
        # float32 one-pass variances (as skimage computes them) against float64
        assert got == pytest.approx(expected, rel=1e-4)

    def test_ssim_constants_come_from_the_float_dtype_range(self):
        # constant images: the structure term is C2 / C2 = 1, the luminance term keeps C1
        a, b = np.full(SHAPE, 100, np.uint8), np.full(SHAPE, 160, np.uint8)
        fused = np.full(SHAPE, 110, np.uint8)
        c1 = (0.01 * 2) ** 2  # data_range 2, not 255

        def luminance(x, y):
            return (2 * x * y + c1) / (x * x + y * y + c1)

        expected = luminance(110.0, 100.0) + luminance(110.0, 160.0)
        got = metrics.evaluate([a, b], fused, names=["SSIM_sum"], convention="cddfuse")["SSIM_sum"]
        assert got == pytest.approx(expected, rel=1e-6)

    def test_ssim_of_equal_images_is_one_each(self):
        sources, _ = _group(6)
        got = metrics.evaluate(sources, sources[0], names=["SSIM_sum"], convention="cddfuse")["SSIM_sum"]
        assert got == pytest.approx(1.0 + self._skimage_ssim_float64(sources[0], sources[1]), rel=1e-4)


class TestVIFB:
    """VIFB's metrics/*.m."""

    def test_psnr_and_rmse_use_root_sse_over_pixels(self):
        a = np.zeros(SHAPE, np.uint8)
        b = np.zeros(SHAPE, np.uint8)
        fused = np.full(SHAPE, 2, np.uint8)
        # mse(a, f) in metricsPsnr.m: sqrt(HW * 2^2) / (HW) = 2 / sqrt(HW)
        root_sse = 2 / math.sqrt(SHAPE[0] * SHAPE[1])
        got = metrics.evaluate([a, b], fused, names=["PSNR", "RMSE"], convention="vifb")
        assert got["RMSE"] == pytest.approx(root_sse, rel=1e-6)
        assert got["PSNR"] == pytest.approx(20 * math.log10(255 / math.sqrt(root_sse)), rel=1e-6)
        paper = metrics.evaluate([a, b], fused, names=["PSNR", "RMSE"])
        assert paper["RMSE"] == pytest.approx(2.0) and paper["PSNR"] == pytest.approx(
            20 * math.log10(255 / 2)
        )

    def test_mi_stretches_and_uses_natural_logs(self):
        a = np.zeros(SHAPE, np.uint8)
        a[:, SHAPE[1] // 2 :] = 10
        fused = np.where(a > 0, 200, 50).astype(np.uint8)  # another range, same partition
        got = metrics.evaluate([a, a], fused, names=["MI"], convention="vifb")["MI"]
        assert got == pytest.approx(2 * math.log(2), rel=1e-6)  # 1 bit = ln 2 nats per source

    def test_en_bins_by_floor(self):
        fused = np.full(SHAPE, 0.6, np.float32)
        fused[: SHAPE[0] // 2] = 1.4  # floor: levels 0 and 1 (1 bit); rounding: level 1 only (0 bits)
        sources = np.stack([fused, fused])
        assert metrics.evaluate(sources, fused, names=["EN"], convention="vifb")["EN"] == pytest.approx(1.0)
        assert metrics.evaluate(sources, fused, names=["EN"])["EN"] == pytest.approx(0.0, abs=1e-7)

    def test_qabf_ties_on_the_0_65025_scale(self):
        # a ramp of 1/8 per column: Sobel strength 1 inside, every pixel a tie (F = A = B)
        ramp = np.tile(np.arange(SHAPE[1], dtype=np.float32) / 8, (SHAPE[0], 1))
        sources = np.stack([ramp, ramp])
        qa = QABF_TA / (1 + math.exp(QABF_KA * (1 - QABF_DA)))
        # VIFB: G = 255 g_F at ties, so Qg = Tg wherever g_F > 0
        vifb = metrics.evaluate(sources, ramp, names=["Qabf"], convention="vifb")["Qabf"]
        assert vifb == pytest.approx(QABF_TG * qa, rel=1e-6)
        # on 0-255 (Tang, CDDFuse) the interior ties have G = g_F = 1: Qg = Tg / (1 + e^-7.5)
        tang = metrics.evaluate(sources, ramp, names=["Qabf"], convention="tang")["Qabf"]
        assert tang < vifb * (1 - 3e-4)
        # the default (G = 1 at ties): the documented maximum in the interior
        paper = metrics.evaluate(sources, ramp, names=["Qabf"])["Qabf"]
        assert paper == pytest.approx(QABF_TG / (1 + math.exp(-7.5)) * qa, rel=1e-6)


class TestTang:
    """Tang's Evaluation/*.m."""

    def test_psnr_adds_20_log10_255_and_mse_is_on_0_1(self):
        a = np.full(SHAPE, 100, np.uint8)
        b = np.full(SHAPE, 104, np.uint8)
        fused = np.full(SHAPE, 102, np.uint8)  # MSE 4 on 0-255
        got = metrics.evaluate([a, b], fused, names=["PSNR", "MSE"], convention="tang")
        assert got["MSE"] == pytest.approx(4 / 255**2, rel=1e-6)
        assert got["PSNR"] == pytest.approx(20 * math.log10(255 / math.sqrt(4 / 255**2)), rel=1e-6)
        paper = metrics.evaluate([a, b], fused, names=["PSNR"])["PSNR"]
        assert got["PSNR"] - paper == pytest.approx(20 * math.log10(255), abs=1e-4)  # 48.13 dB

    def test_mi_merges_gray_levels_254_and_255(self):
        image = np.full(SHAPE, 254, np.uint8)
        image[:, SHAPE[1] // 2 :] = 255
        # H(A) = H(F) = 1 bit; Hab.m's joint histogram has one cell: H(F, A) = 0
        got = metrics.evaluate([image, image], image, names=["MI"], convention="tang")["MI"]
        assert got == pytest.approx(2 * (1 + 1 - 0), abs=1e-6)
        assert metrics.evaluate([image, image], image, names=["MI"])["MI"] == pytest.approx(2.0, abs=1e-6)

    def test_mi_equals_the_default_below_254(self):
        sources, fused = _group(7)
        sources, fused = sources // 2, fused // 2
        tang = metrics.evaluate(sources, fused, names=["MI"], convention="tang")["MI"]
        assert tang == pytest.approx(metrics.evaluate(sources, fused, names=["MI"])["MI"], rel=1e-6)

    def test_sf_of_a_ramp(self):
        ramp = np.tile(np.arange(SHAPE[1], dtype=np.float32), (SHAPE[0], 1))
        sources = np.stack([ramp, ramp])
        assert metrics.evaluate(sources, ramp, names=["SF"], convention="tang")["SF"] == pytest.approx(1.0)
        h, w = SHAPE
        paper = metrics.evaluate(sources, ramp, names=["SF"])["SF"]
        assert paper == pytest.approx(math.sqrt((w - 1) / w), rel=1e-6)


class TestFmiQuirks:
    """Haghighat's fmi.m (Tang's analysis_fmi.m)."""

    def test_flat_unequal_windows_score_one(self):
        a, b, f = (np.full((6, 7), v, np.float32) for v in (10, 20, 30))
        sources = np.stack([a, b])
        quirky = metrics.feature_mutual_information(sources, f, feature="pixel", fmi_m_quirks=True)
        assert float(quirky) == 1.0
        # the default: the correlation of two uniform PDFs is 0 up to float32 round-off
        default = metrics.feature_mutual_information(sources, f, feature="pixel")
        assert float(default) == pytest.approx(0.0, abs=1e-5)

    def test_one_flat_source_window(self):
        # A flat and unequal to F everywhere, B equal to F: fmi.m gives (1 + 1) / 2
        rng = np.random.default_rng(8)
        f = rng.integers(0, 256, (6, 7)).astype(np.float32)
        a = np.full_like(f, 7.0)
        a_only = np.stack([np.full_like(f, 7.0), np.full_like(f, 9.0)])
        flat_f = np.full_like(f, 11.0)
        got = metrics.feature_mutual_information(a_only, flat_f, feature="pixel", fmi_m_quirks=True)
        assert float(got) == 1.0
        # B == F raw but A != F: the second test sees the rescaled F, so fmi.m computes
        # the window pair, whose PDFs are equal: about 1 either way
        got = metrics.feature_mutual_information(np.stack([a, f]), f, feature="pixel", fmi_m_quirks=True)
        paper = metrics.feature_mutual_information(np.stack([a, f]), f, feature="pixel")
        assert float(got) == pytest.approx(float(paper), abs=1e-5)

    def test_no_flat_windows_no_difference(self):
        sources, fused = (x.astype(np.float32) for x in _group(9, (6, 7)))
        got = metrics.feature_mutual_information(sources, fused, feature="pixel", fmi_m_quirks=True)
        assert float(got) == pytest.approx(
            float(metrics.feature_mutual_information(sources, fused)), abs=1e-6
        )

    def test_tang_fmi_dct_uses_them(self):
        sources, fused = (x.astype(np.float32) for x in _group(10, (6, 7)))
        got = metrics.evaluate(sources, fused, names=["FMI_dct"], convention="tang")["FMI_dct"]
        expected = metrics.feature_mutual_information(sources, fused, feature="dct", fmi_m_quirks=True)
        assert got == pytest.approx(float(expected), rel=1e-7)


class TestLiu:
    """Liu's imageFusionMetrics."""

    def test_qy_is_nan_where_both_sources_vanish_on_a_window(self):
        sources, fused = _group(11)
        sources = sources.copy()
        assert not math.isnan(metrics.evaluate(sources, fused, names=["Qy"], convention="liu")["Qy"])
        sources[:, 5:12, 9:16] = 0  # one 7x7 window of zeros in both
        got = metrics.evaluate(sources, fused, names=["Qy"], convention="liu")["Qy"]
        assert math.isnan(got)
        assert not math.isnan(metrics.evaluate(sources, fused, names=["Qy"])["Qy"])

    @staticmethod
    def _one_pass_flat_variance(c: float) -> float:
        """metricYang.m's filter2(w, c.*c) - filter2(w, c).^2 on a flat window, written out:
        the normalised 7x7 Gaussian (sums in order), accumulated tap by tap with a single
        rounding per multiply-add (Octave's conv2 on images of the usual sizes)."""
        x = np.arange(7.0) - 3
        w = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2)).ravel()
        for _ in range(2):
            total = 0.0
            for t in w:
                total += t
            w = w / total
        mean = second = 0.0
        for t in w.tolist():
            mean = float(Fraction(t) * Fraction(c) + Fraction(mean))
            second = float(Fraction(t) * Fraction(c * c) + Fraction(second))
        return second - mean * mean

    @pytest.mark.parametrize("level", [0, 3, 5, 8, 21, 200])
    def test_qy_is_nan_where_flat_windows_have_zero_one_pass_variance(self, level):
        sources, fused = _group(15)
        sources = sources.copy()
        sources[:, 5:12, 9:16] = level  # one 7x7 window flat (and equal) in both
        got = metrics.evaluate(sources, fused, names=["Qy"], convention="liu")["Qy"]
        residual = self._one_pass_flat_variance(float(level))
        assert math.isnan(got) == (residual + residual == 0), (level, residual)
        if not math.isnan(got):
            assert got == metrics.evaluate(sources, fused, names=["Qy"])["Qy"]

    def test_the_zero_residual_levels_include_zero_and_exclude_others(self):
        assert self._one_pass_flat_variance(0.0) == 0.0
        assert self._one_pass_flat_variance(3.0) != 0.0  # most levels leave a residual

    def test_qy_without_such_windows_is_the_default(self):
        sources, fused = _group(12)
        sources[0, 5:12, 9:16] = 0  # zero in one source only: no 0/0
        got = metrics.evaluate(sources, fused, names=["Qy"], convention="liu")["Qy"]
        assert got == metrics.evaluate(sources, fused, names=["Qy"])["Qy"]

    def test_q_te_uses_the_transposed_marginals(self):
        sources, fused = _group(13)
        got = metrics.evaluate(sources, fused, names=["Q_TE"], convention="liu")["Q_TE"]
        assert got == pytest.approx(
            float(metrics.tsallis_fusion(sources, fused, liu_marginals=True)), rel=1e-7
        )
        assert got != pytest.approx(metrics.evaluate(sources, fused, names=["Q_TE"])["Q_TE"], rel=1e-5)


class TestCommandLine:
    @pytest.fixture
    def tiny_set(self, tmp_path):
        testset, fused = tmp_path / "set", tmp_path / "fused"
        testset.mkdir()
        fused.mkdir()
        sources, f = _group(14)
        write_image(testset / "g1-A.png", sources[0])
        write_image(testset / "g1-B.png", sources[1])
        write_image(fused / "g1.png", f)
        return testset, fused, sources, f

    def test_bad_convention_is_one_line(self, tiny_set, tmp_path, capsys):
        testset, fused, _, _ = tiny_set
        argv = [
            str(testset),
            "--fused",
            str(fused),
            "--out",
            str(tmp_path / "o"),
            "--convention",
            "bad",
            "-q",
        ]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "'bad'" in err[0]
        assert "Traceback" not in "".join(err)

    def test_metric_outside_the_convention_is_one_line(self, tiny_set, tmp_path, capsys):
        testset, fused, _, _ = tiny_set
        argv = [str(testset), "--fused", str(fused), "--out", str(tmp_path / "o")]
        assert main([*argv, "--convention", "vifb", "--metrics", "EN,SCD", "-q"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "SCD is not reproduced under convention 'vifb'" in err[0]

    def test_vifb_on_a_tiny_folder(self, tiny_set, tmp_path):
        testset, fused, sources, f = tiny_set
        out = tmp_path / "out"
        argv = [str(testset), "--fused", str(fused), "--out", str(out), "--convention", "vifb"]
        assert main([*argv, "--metrics", "EN,PSNR,RMSE", "-q"]) == 0
        with (out / "metrics.csv").open(newline="") as handle:
            (row,) = list(csv.DictReader(handle))
        h, w = SHAPE
        root_sse = [math.sqrt(np.sum((s.astype(np.float64) - f) ** 2)) / (h * w) for s in sources]
        assert float(row["RMSE"]) == pytest.approx(np.mean(root_sse), rel=1e-5)
        assert float(row["PSNR"]) == pytest.approx(
            20 * math.log10(255 / math.sqrt(np.mean(root_sse))), rel=1e-5
        )
        assert "metric convention: vifb" in (out / "metrics.md").read_text()
