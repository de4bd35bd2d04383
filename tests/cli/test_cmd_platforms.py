"""`hwsim platforms` (cli/cmd_platforms.py): the shipped offload platforms and the documented template."""

import json

from cli import main


def test_platforms_lists_and_prints_a_template(capsys, tmp_path):
    from offload import get_platform

    assert main(["platforms", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["a6000-csd", "a6000-ssd", "t4-flexgen"]
    assert main(["platforms"]) == 0
    assert "t4-flexgen" in capsys.readouterr().out
    assert main(["platforms", "--template"]) == 0
    (tmp_path / "mine.yaml").write_text(capsys.readouterr().out)
    assert get_platform(tmp_path / "mine.yaml").name == "my-host"
