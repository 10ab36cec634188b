"""Issue 18's presets through the command line: listed with their paper ids and settings, and an incoherent
combination is one line and exit 2 before any model loads."""

import pytest

from grouprl.cli.main import main


def test_list_algorithms_shows_the_new_rows_with_paper_ids(capsys):
    assert main(["list", "algorithms"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["maxrl"][1:3] == ["2602.02710", "maxrl"]
    assert lines["gppo"][1] == "2508.07629" and lines["gppo"][4] == "gppo"
    assert lines["ce_gppo"][1] == "2509.20712" and lines["ce_gppo"][-2:] == ["clip_ratio_c=3.0",
                                                                            "gppo_beta1=0.75"]


@pytest.mark.parametrize("overrides,message", [
    (["algorithm=maxrl", "algo.shaping=[soft_overlong]", "algo.overlong_max_len=8",
      "algo.overlong_buffer_len=2"],
     "algo: advantage='maxrl' divides by the group's mean reward, a success rate, but the shaping "
     "soft_overlong subtracts from the reward"),
    (["algorithm=ce_gppo", "algo.gppo_beta1=-1"], "gppo_beta1 and gppo_beta2 must be >= 0"),
])
def test_an_incoherent_combination_is_one_line_and_exit_2(tmp_path, capsys, overrides, message):
    run_dir = tmp_path / "run"
    code = main(["train", *overrides, f"output.run_dir={run_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert message in err
    assert not run_dir.exists()
