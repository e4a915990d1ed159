"""Config errors name file, line and field; job ids sort by time."""

from pathlib import Path

import pytest

from master.config import MasterConfig, load_master_config
from minion.config import MinionConfig, load_minion_config
from saline.config import load_yaml_model
from saline.errors import ConfigError
from saline.jid import new_jid


def test_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("port: 4700\nauto_accept: true\n")
    config = load_yaml_model(path, MasterConfig)
    assert (config.port, config.auto_accept) == (4700, True)


def test_bad_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("interface: 127.0.0.1\n\nport: not-a-port\n")
    with pytest.raises(ConfigError) as err:
        load_yaml_model(path, MasterConfig)
    assert f"{path}:3: port:" in str(err.value)


def test_nested_field_line(tmp_path: Path) -> None:
    path = tmp_path / "minion.yaml"
    path.write_text("id: m1\nservices:\n  web:\n    argv: []\n")
    with pytest.raises(ConfigError) as err:
        load_yaml_model(path, MinionConfig)
    assert f"{path}:4: services.web.argv:" in str(err.value)


def test_unknown_setting_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("prot: 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_yaml_model(path, MasterConfig)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("port: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml_model(path, MasterConfig)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml_model(tmp_path / "nope.yaml", MasterConfig)


def test_jids_are_unique_and_sort_by_creation() -> None:
    jids = [new_jid() for _ in range(10_000)]
    assert len(set(jids)) == len(jids)
    assert jids == sorted(jids)
    assert all(len(j) == 20 and j.isdigit() for j in jids)


def test_packaged_example_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "packaging" / "config"
    master = load_yaml_model(root / "master.yaml", MasterConfig)
    assert master == MasterConfig(), "the example lists the defaults"
    minion = load_yaml_model(root / "minion.yaml", MinionConfig)
    assert minion.grains == {"role": "backend"}


def test_a_config_of_the_other_kind_is_named_for_what_it_is(tmp_path: Path) -> None:
    minion_file = tmp_path / "minion.yaml"
    minion_file.write_text("id: be1\nmaster: 10.0.0.1\nmaster_finger: ab\n")
    with pytest.raises(ConfigError) as info:
        load_master_config(str(minion_file))
    assert str(info.value) == (
        f"{minion_file}: this looks like a minion config (it sets master, master_finger),"
        " not the MasterConfig this command reads"
    )
    master_file = tmp_path / "master.yaml"
    master_file.write_text("file_roots: [/srv]\nreactor_dirs: [/etc/r]\n")
    with pytest.raises(
        ConfigError, match=r"this looks like a master config \(it sets reactor_dirs\)"
    ):
        load_minion_config(str(master_file))
    # file_roots and pillar_roots alone are a minion's too (masterless ``saline call --local``)
    master_file.write_text("file_roots: [/srv]\npillar_roots: [/srv/p]\n")
    assert load_minion_config(str(master_file))[0].file_roots == [Path("/srv")]


def test_an_unknown_setting_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = tmp_path / "master.yaml"
    path.write_text("port: 4606\npresense_timeout: 5\n")
    with pytest.raises(ConfigError) as info:
        load_master_config(str(path))
    assert str(info.value) == (
        f"{path}:2: presense_timeout: Extra inputs are not permitted"
        " (did you mean 'presence_timeout'?)"
    )
