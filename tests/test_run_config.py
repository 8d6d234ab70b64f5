from pathlib import Path

import pytest
from pydantic import ValidationError

from factory.cli import main
from factory.config_loading import load_config
from factory.run_config import CaptionRunConfig, load_run_config
from factory.stages.critic import CriticConfig

PRESETS = sorted((Path(__file__).parent.parent / "jobs" / "configs").glob("*.yaml"))


def test_defaults_work_offline():
    config = CaptionRunConfig()
    assert config.caption.engine.model == "builtin://tiny-llava"
    assert config.caption.engine.trust_remote_code is False
    assert config.dedup.shards >= 1  # the index: hash shards, no image bytes through them


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_every_preset_parses(preset):
    # train_* presets are training runs, serve_* serving configs (serve_deploy_* are Serve
    # config files whose app args are one); every other preset is a caption run
    if preset.name.startswith("train_"):
        from factory.train.train_config import TrainConfig

        assert isinstance(load_config(preset, model=TrainConfig), TrainConfig)
    elif preset.name.startswith("serve_deploy_"):
        from tests.serve.presets import check_serve_deploy_file

        check_serve_deploy_file(preset)
    elif preset.name.startswith("serve_"):
        from factory.serve.serve_config import ServeConfig

        assert isinstance(load_config(preset, model=ServeConfig), ServeConfig)
    else:
        assert isinstance(load_run_config(preset), CaptionRunConfig)


def test_overrides_are_typed_and_nested(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("validation:\n  min_side: 10\n")
    config = load_run_config(
        path,
        ["validation.min_side=64", "dedup.near=false", "caption.engine.model=/m", "extensions=[]"],
    )
    assert config.validation.min_side == 64
    assert config.dedup.near is False
    assert config.caption.engine.model == "/m"
    assert config.extensions == []
    assert load_run_config(None, ["caption=null"]).caption is None


def test_a_section_changes_only_the_fields_it_names(tmp_path):
    config = load_run_config(None, ["dedup.resources.num_cpus=1", "caption.engine.cache_dir=/c"])
    assert config.dedup.resources.compute == "tasks"
    assert config.dedup.resources.batch_size == 64
    assert config.dedup.resources.num_cpus == 1
    assert config.caption.engine.model == "builtin://tiny-llava"
    assert config.caption.engine.cache_dir == "/c"


def test_unknown_fields_and_bad_values_are_refused():
    with pytest.raises(ValidationError, match="min_sid"):
        load_run_config(None, ["validation.min_sid=3"])
    with pytest.raises(ValidationError, match="hamming_threshold"):
        load_run_config(None, ["dedup.hamming_threshold=99"])
    with pytest.raises(ValueError, match="not key=value"):
        load_run_config(None, ["novalue"])


def test_cli_config_prints_resolved_yaml_and_reports_errors(capsys):
    assert main(["config", "--set", "dedup.hamming_threshold=3"]) == 0
    assert "hamming_threshold: 3" in capsys.readouterr().out
    assert main(["config", "--set", "dedup.bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_a_section_that_is_off_starts_from_its_defaults(tmp_path):
    # critic is off by default: one field of it switches it on with every other default
    config = load_run_config(None, ["critic.step.generation.max_new_tokens=40"])
    defaults = CriticConfig()
    assert config.critic.step.generation.max_new_tokens == 40
    assert config.critic.step.prompt == defaults.step.prompt
    assert config.critic.resources == defaults.resources
    # a YAML section naming a few fields keeps the stage's own defaults for the rest
    path = tmp_path / "loop.yaml"
    path.write_text("critic:\n  resources: {num_cpus: 0.1}\n")
    critic = load_run_config(path).critic
    assert critic.resources.num_cpus == 0.1
    assert critic.resources.compute == defaults.resources.compute == "actors"
    assert critic.resources.batch_size == defaults.resources.batch_size


def test_config_mistakes_are_one_line_each(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("caption:\n  styles: [unclosed\n")
    assert main(["config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"factory config: {bad}, line 3, column 1: not valid YAML: ")
    assert main(["config", "--set", "caption.stlyes=[]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("factory config: unknown key 'caption.stlyes' (known here: ")
    assert "styles" in err and "\n" not in err
    assert main(["config", "--set", "dedup.hamming_threshold=99"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("factory config: dedup.hamming_threshold: ") and "\n" not in err


def test_an_output_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    output = tmp_path / "results.txt"
    output.write_text("not a folder")
    args = ["caption", "--input", str(tmp_path), "--output", str(output)]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"factory caption: output {str(output)!r} is a file; name a folder or an s3:// prefix"
    )
    assert output.read_text() == "not a folder"
