"""Adapter checkpoints: only what training changed is stored, the frozen encoder comes back from its installed weights
after a hash check, and the adapter is standard peft."""
import json

import pytest
import torch

from fixtures.encoders import tiny_encoder_dir
from itjner.backbones import BackboneUnavailable, load_tokenizer
from itjner.batching import build_examples, collate
from itjner.configuration_itjner import preset
from itjner.data import Tweet
from itjner.modeling_itjner import ITJNERModel

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
TWEETS = [Tweet("a", "Kevin Durant joins the Warriors in Oakland".split()), Tweet("b", ["hello"])]


@pytest.fixture()
def encoder(tmp_path):
    return tiny_encoder_dir(tmp_path / "encoder")


def adapter_model(encoder, seed=0):
    cfg, _ = preset("tiny")
    cfg = cfg.with_ablation(text_only=True)
    cfg.text_encoder, cfg.adapter, cfg.dropout = str(encoder), dict(LORA), 0.0
    torch.manual_seed(seed)
    model = ITJNERModel.from_config(cfg)
    with torch.no_grad():  # a trained adapter is not zero: make it change the encoder
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return model.eval()


def emissions(model, encoder):
    tokenizer = load_tokenizer(str(encoder))
    with torch.no_grad():
        return model(collate(build_examples(TWEETS, tokenizer, model.config), model.config)).emissions


def test_checkpoint_holds_the_adapter_not_the_encoder(encoder, tmp_path):
    from safetensors.torch import load_file

    model = adapter_model(encoder)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable if n.startswith("text.encoder."))
    model.save_pretrained(tmp_path / "ck")
    stored = load_file(str(tmp_path / "ck" / "model.safetensors"))
    assert stored and not any(k.startswith("text.encoder.") for k in stored)
    adapter = load_file(str(tmp_path / "ck" / "encoder_adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["adapter"]["r"] == 4 and config["text_encoder_weights"]["file"] == "model.safetensors"
    assert len(config["text_encoder_weights"]["sha256"]) == 64


def test_merged_and_unmerged_loads_tag_exactly_as_trained(encoder, tmp_path):
    model = adapter_model(encoder)
    model.save_pretrained(tmp_path / "ck")
    merged = ITJNERModel.from_pretrained(tmp_path / "ck")
    apart = ITJNERModel.from_pretrained(tmp_path / "ck", merge=False)
    want = emissions(model, encoder)
    assert not torch.allclose(want, emissions(adapter_model(encoder, seed=1), encoder))  # the adapter matters
    assert torch.allclose(emissions(merged, encoder), want, atol=1e-5)
    assert torch.allclose(emissions(apart, encoder), want, atol=1e-6)
    with pytest.raises(ValueError, match="merged"):
        merged.save_pretrained(tmp_path / "again")
    apart.save_pretrained(tmp_path / "again")  # an unmerged load saves as an adapter checkpoint again
    assert torch.allclose(emissions(ITJNERModel.from_pretrained(tmp_path / "again"), encoder), want, atol=1e-5)


def test_the_adapter_loads_with_plain_peft(encoder, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    model = adapter_model(encoder)
    model.save_pretrained(tmp_path / "ck")
    plain = PeftModel.from_pretrained(AutoModel.from_pretrained(encoder), str(tmp_path / "ck" / "encoder_adapter"))
    ids = torch.tensor([[101, 2002, 3000, 102]])
    with torch.no_grad():
        ours = model.text.encoder(input_ids=ids).last_hidden_state
        theirs = plain.eval()(input_ids=ids).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_other_encoder_weights_are_refused_in_one_line(encoder, tmp_path):
    from safetensors.torch import load_file, save_file

    adapter_model(encoder).save_pretrained(tmp_path / "ck")
    weights = load_file(str(encoder / "model.safetensors"))
    name = next(iter(weights))
    weights[name] = weights[name] + 0.01
    save_file(weights, str(encoder / "model.safetensors"))
    with pytest.raises(BackboneUnavailable) as info:
        ITJNERModel.from_pretrained(tmp_path / "ck")
    message = str(info.value)
    assert "\n" not in message and "not the ones this checkpoint was trained over" in message


def test_a_checkpoint_copied_without_its_adapter_is_refused(encoder, tmp_path):
    import shutil

    adapter_model(encoder).save_pretrained(tmp_path / "ck")
    shutil.rmtree(tmp_path / "ck" / "encoder_adapter")
    with pytest.raises(FileNotFoundError, match="copy the whole checkpoint folder"):
        ITJNERModel.from_pretrained(tmp_path / "ck")


def test_missing_mpnet_weights_say_how_to_install(tmp_path, monkeypatch):
    from importlib import metadata

    from itjner import backbones

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setenv("ITJNER_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(BackboneUnavailable, match="requirements-base.txt"):
        backbones.check_weights({"name": "mpnet-base", "file": "model.safetensors", "sha256": "0" * 64})


@pytest.mark.slow  # trains
def test_training_an_adapter_keeps_the_encoder_and_fine_tuning_it_again_stays_small(encoder, tmp_path):
    from itjner.data import write_conll
    from itjner.train import train

    from fixtures.app_checkpoints import synthetic_tweets

    data = tmp_path / "data"
    data.mkdir()
    write_conll(synthetic_tweets(24, 0), data / "train.txt")
    write_conll(synthetic_tweets(8, 1), data / "valid.txt")
    cfg, train_cfg = preset("tiny")
    cfg = cfg.with_ablation(text_only=True)
    cfg.text_encoder, cfg.adapter = str(encoder), dict(LORA)
    train_cfg.epochs = 1
    before = (encoder / "model.safetensors").read_bytes()
    train(cfg, train_cfg, data, tmp_path / "first", test=False, log=lambda *a: None)
    train(cfg, train_cfg, data, tmp_path / "second", test=False, log=lambda *a: None, init_from=tmp_path / "first")
    assert (encoder / "model.safetensors").read_bytes() == before
    for run in ("first", "second"):
        assert (tmp_path / run / "encoder_adapter" / "adapter_model.safetensors").is_file()
        assert json.loads((tmp_path / run / "config.json").read_text())["adapter"]["r"] == 4
    card = json.loads((tmp_path / "second" / "card.json").read_text())
    assert card["init_from"] == str(tmp_path / "first")


@pytest.mark.parametrize("flags,message", [(["--lora-r", "0"], "positive integer"),
                                           (["--adapter", "none", "--lora-r", "8"], "--adapter none"),
                                           (["--lora-dropout", "1.5"], "dropout")])
def test_adapter_flags_that_make_no_sense_are_refused(flags, message, tmp_path, capsys):
    from itjner import cli

    try:  # argparse exits 2 on a bad value; the CLI returns 2 with "error: ..." on a bad combination
        code = cli.main(["train", "--preset", "tiny", "--data", str(tmp_path), "--out", str(tmp_path / "x"), *flags])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err
