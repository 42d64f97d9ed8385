"""Config: defaults live in the dataclasses; TOML and --set override; bad keys are errors."""

from __future__ import annotations

import pytest

from embedpipe.config import Config, InputFormat, Tokenizer, load_config
from embedpipe.errors import ConfigError


def test_defaults_are_the_documented_ones():
    cfg = Config()
    assert cfg.vocab.min_count == 5 and cfg.vocab.tokenizer is Tokenizer.REGEX
    assert cfg.cooccur.window == 10 and cfg.glove.x_max == 100.0 and cfg.glove.eta == 0.05
    assert cfg.svd.oversample == 40 and cfg.svd.power_iters == 7 and cfg.word2vec.negative == 5
    assert cfg.encode.max_doc_tokens == 10000


def test_toml_and_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[input]\npath = "x.txt"\nformat = "parquet"\n[glove]\ndim = 50\n'
                 '[spark.conf]\n"spark.driver.memory" = "3g"\n')
    cfg = load_config(str(f), ["glove.epochs=7", "vocab.lowercase=false",
                               "spark.conf.spark.sql.shuffle.partitions=3"])
    assert cfg.input.path == "x.txt" and cfg.input.format is InputFormat.PARQUET
    assert cfg.glove.dim == 50 and cfg.glove.epochs == 7 and cfg.vocab.lowercase is False
    assert cfg.spark.conf == {"spark.driver.memory": "3g", "spark.sql.shuffle.partitions": "3"}


@pytest.mark.parametrize(("overrides", "message"), [
    (["glove.dimm=3"], "unknown config key 'glove.dimm' (did you mean 'glove.dim'?)"),
    (["glov.dim=3"], "unknown config table [glov] (did you mean 'glove'?)"),
    (["glove.dim=0"], "glove.dim = 0 is out of range: must be >= 1"),
    (["glove.dim=ten"], "glove.dim = 'ten' must be an integer"),
    (["glove.eta=-0.1"], "glove.eta = -0.1 is out of range"),
    (["cooccur.window=0"], "cooccur.window = 0 is out of range: must be >= 1"),
    (["cooccur.weighting=linear"], "cooccur.weighting = 'linear' is not one of harmonic, uniform"),
    (["svd.eig=0.3"], "svd.eig = 0.3 must be one of 0.0, 0.5, 1.0"),
    (["vocab.lowercase=maybe"], "vocab.lowercase = 'maybe' must be true or false"),
    (["glove"], "expected section.key=value"),
    (["word2vec.minn=7"], "word2vec.minn = 7 must be <= word2vec.maxn = 6"),
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_toml(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[vocab]\nmin_count = 'five'\n")
    with pytest.raises(ConfigError, match=r"vocab\.min_count = 'five' must be an integer"):
        load_config(str(f))
    f.write_text("[vocabulary]\nmin_count = 3\n")
    with pytest.raises(ConfigError, match=r"unknown config table \[vocabulary\]"):
        load_config(str(f))
    f.write_text("[vocab\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(str(f))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "missing.toml"))


def test_section_hash_changes_with_settings():
    a, b = Config(), load_config(None, ["vocab.min_count=6"])
    assert a.section_hash("vocab") != b.section_hash("vocab")
    assert a.section_hash("glove") == b.section_hash("glove")


def test_shipped_configs_load():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for name in ("local.toml", "cluster.toml"):
        load_config(str(repo / "conf" / name))
