import json

import numpy as np
import pytest

from sambay.analysis.scaling import (
    PUBLISHED_DEPTHS,
    PUBLISHED_FITS,
    PUBLISHED_LOSSES,
    fit_runs,
    fit_scaling_law,
    load_runs,
    published_runs,
    transformer_pp_flops,
)


def test_compute_axis_matches_the_published_flops_for_d8_to_d24():
    # the compute axis of the published fits: 9.12e18, 1.04e20, 5.84e20, 2.23e21, 6.65e21
    flops = [transformer_pp_flops(d) for d in PUBLISHED_DEPTHS]
    np.testing.assert_allclose(flops, [9.12e18, 1.04e20, 5.84e20, 2.23e21, 6.65e21], rtol=5e-3)


@pytest.mark.parametrize("arch", ["sambay muP++", "samba+yoco muP++", "transformer++ muP++"])
def test_refit_of_published_losses_recovers_published_mup_pp_fit(arch):
    fit = fit_runs(published_runs())[arch]
    A, b, C = PUBLISHED_FITS[arch]
    assert fit.A == pytest.approx(A, rel=0.01)  # got 39.79 / 40.60 / 49.64
    assert round(fit.b, 2) == b  # got 0.0694 / 0.0702 / 0.0745
    assert round(fit.C, 2) == C  # got 0.585 / 0.607 / 0.642
    assert 0 < fit.A_err < 0.1 * fit.A and 0 < fit.b_err < 0.01 and 0 < fit.C_err < 0.05


def test_refit_of_published_losses_recovers_sp_and_mup_rows_too():
    fits = fit_runs(published_runs())
    sp, mup = fits["transformer++ SP"], fits["transformer++ muP"]
    assert sp.A == pytest.approx(239.90, rel=0.01) and round(sp.b, 2) == 0.12 and round(sp.C, 2) == 1.11
    assert mup.A == pytest.approx(54.5, rel=0.01) and round(mup.b, 3) == 0.076
    assert round(mup.C, 2) == 0.64


def test_fit_message_sambay_has_same_exponent_and_lowest_irreducible_loss():
    fits = fit_runs(published_runs())
    mupp = {a: f for a, f in fits.items() if a.endswith("muP++")}
    assert min(mupp, key=lambda a: mupp[a].C) == "sambay muP++"
    assert max(f.b for f in mupp.values()) - min(f.b for f in mupp.values()) < 0.01


def test_tokens_axis_recovers_a_known_law_and_bounds_hold():
    D = np.array([100, 200, 300, 400, 500, 600.0])  # billions of tokens
    loss = 1.2 * D ** -0.4 + 1.8
    fit = fit_scaling_law(D, loss, axis="tokens")
    assert (fit.A, fit.b, fit.C) == pytest.approx((1.2, 0.4, 1.8), rel=1e-3)
    flat = fit_scaling_law(D, np.full(6, 2.0) + 1e-4 * np.arange(6)[::-1], axis="tokens")
    assert 0 <= flat.C <= 2.0 and 1e-6 <= flat.b <= 1 and flat.A >= 0
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_scaling_law([1, 2], [3, 2])


def test_runs_load_from_json_jsonl_and_run_directories(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"arch": "x", "depth": 8, "val_loss": 2.5}]))
    (tmp_path / "b.jsonl").write_text('{"arch": "x", "depth": 12, "val_loss": 2.2}\n\n'
                                      '{"arch": "y", "depth": 8, "val_loss": 2.4, "tokens": 1e11}\n')
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"arch": "x", "depth": 16}))  # trainer's layout
    (run / "metrics.jsonl").write_text('{"step": 1, "val_loss": 3.0}\n{"step": 2, "loss": 2.5}\n'
                                       '{"step": 3, "val_loss": 2.05, "tokens": 5e9}\n{"step": 4}\n')
    runs = load_runs([tmp_path / "a.json", tmp_path / "b.jsonl", run])
    assert [(r.arch, r.depth, r.val_loss) for r in runs] == [
        ("x", 8, 2.5), ("x", 12, 2.2), ("y", 8, 2.4), ("x", 16, 2.05)]
    assert runs[2].x("tokens") == 100.0 and runs[3].tokens == 5e9
    nested = tmp_path / "run2"
    nested.mkdir()
    (nested / "config.json").write_text(json.dumps({"model": {"arch": "x", "n_layer": 20,
                                                              "parametrization": "sp"}}))
    (nested / "metrics.jsonl").write_text('{"val_loss": 1.9}\n')
    (r,) = load_runs([nested])
    assert (r.arch, r.depth, r.label) == ("x", 20, "x sp")  # SP and μP++ runs get separate fits
    (tmp_path / "bad.jsonl").write_text('{"arch": "x", "depth": 8}\n')
    with pytest.raises(ValueError, match="needs 'arch' and 'val_loss'"):
        load_runs([tmp_path / "bad.jsonl"])


def _cli(argv):
    from sambay.cli.main import main

    return main(argv)


def test_cli_scaling_fit_prints_fits_for_run_files(tmp_path, capsys):
    runs = tmp_path / "runs.jsonl"
    runs.write_text("".join(json.dumps({"arch": "sambay", "depth": d, "val_loss": v}) + "\n"
                            for d, v in zip(PUBLISHED_DEPTHS, PUBLISHED_LOSSES["sambay muP++"])))
    assert _cli(["scaling", "fit", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "sambay" in out and "A = 39.79" in out and "C = 0.585" in out
    assert _cli(["scaling", "fit", str(tmp_path / "missing.json")]) == 2


def test_cli_plot_without_matplotlib_says_so_clearly(tmp_path, capsys):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert _cli(["scaling", "fit", "--published", "--plot", str(tmp_path / "f.png")]) == 2
        assert "needs matplotlib" in capsys.readouterr().err
    else:
        assert _cli(["scaling", "fit", "--published", "--plot", str(tmp_path / "f.png")]) == 0
        assert (tmp_path / "f.png").is_file() and (tmp_path / "f_sambay_muP__.png").is_file()


def test_a_runs_recorded_tokens_place_it_on_the_compute_axis(tmp_path):
    from sambay.analysis.scaling import load_runs, transformer_pp_flops, transformer_pp_params

    path = tmp_path / "runs.jsonl"
    path.write_text('{"arch": "x", "depth": 8, "val_loss": 2.5}\n{"arch": "x", "depth": 8, "val_loss": 3.1, "tokens": 4e7}\n')
    paper, mine = load_runs([path])
    assert paper.x("compute") == transformer_pp_flops(8)  # no tokens: the paper's budget for depth 8
    assert mine.x("compute") == 6.0 * transformer_pp_params(8) * 4e7
