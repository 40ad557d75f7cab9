"""MIDI-LLaMA on real (tiny, randomly initialised) parts: layout, freezing, answer-only loss, learning, round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from midilm.codecs.octuple import encode_piece  # noqa: E402
from midilm.models.midi_llama import MidiLlama, MidiLlamaConfig, select_windows  # noqa: E402
from midilm.music.examples import example_piece  # noqa: E402
from midilm.understand.prompt import IGNORE, encode_conversation  # noqa: E402

TEXTS = ["It is in G major.", "It is in C minor.", "The tempo is about 120 bpm.", "A short piano snippet in D major.",
         "What key is this piece in?", "Describe this piece of music.", "The time signature is 3/4."] * 20


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from midilm.models.encoder import MusicBertConfig, MusicBertModel
    from midilm.models.tokenizer import train_text_tokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("parts")
    enc = MusicBertModel(MusicBertConfig.tiny(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=64, max_notes=64))
    enc.save_pretrained(root / "encoder")
    tok = train_text_tokenizer(TEXTS, 300, root / "llm")
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                       tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    llm.save_pretrained(root / "llm")
    return root


def _model(parts, k=2, projector="linear", layers=(-1,)):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midilm.models.encoder import MusicBertModel

    enc = MusicBertModel.from_pretrained(parts / "encoder")
    llm = AutoModelForCausalLM.from_pretrained(parts / "llm")
    tok = AutoTokenizer.from_pretrained(parts / "llm")
    cfg = MidiLlamaConfig(encoder_hidden=32 * len(layers), llm_hidden=32, k=k, projector=projector, max_windows=3,
                          pool_layers=list(layers))
    torch.manual_seed(1)
    m = MidiLlama(enc, llm, tok, cfg)
    m.freeze_llm()
    return m


@pytest.fixture(scope="module")
def notes():
    return [encode_piece(example_piece()), encode_piece(example_piece().excerpt(0.0, 8.0))]


def test_windows_spread_over_a_long_piece():
    n = np.zeros((1000, 8), dtype=np.int64)
    n[:, 0] = np.arange(1000) // 10
    ws = select_windows(n, 64, 4)
    assert len(ws) == 4 and all(len(w) == 64 for w in ws)
    assert ws[0][0, 0] == 0  # bars restart at 0 in each window
    assert len(select_windows(n[:100], 64, 4)) == 2


def test_answer_only_labels(parts):
    m = _model(parts)
    enc = encode_conversation(m.tokenizer, [("What key is this piece in?", "It is in G major."),
                                            ("And the tempo?", "The tempo is about 120 bpm.")])
    b = m.batch([enc, encode_conversation(m.tokenizer, [("Describe this piece of music.", "A piano.")])])
    labels, ids = b["labels"][0], b["input_ids"][0]
    learned = m.tokenizer.decode(ids[labels != IGNORE])
    assert "G major" in learned and "120 bpm" in learned
    assert "What key" not in learned and "tempo?" not in learned and "music expert" not in learned
    assert (labels[b["slot"][0] : b["slot"][0] + 2] == IGNORE).all()  # the MIDI slot is never a target
    assert (b["labels"][1][b["attention_mask"][1] == 0] == IGNORE).all()  # nor padding


def test_only_projector_and_lora_get_gradients(parts, notes):
    m = _model(parts).add_lora(r=4, alpha=8, dropout=0.0)
    m.freeze_llm()
    m.train()
    assert not m.encoder.training  # frozen encoder stays in eval mode (no dropout)
    from midilm.models.encoder import batch_ids

    feats = m.features(notes)
    encs = [encode_conversation(m.tokenizer, [("What key is this piece in?", "It is in G major.")])] * 2
    b = m.batch(encs)
    m(midi_features=feats, **b).loss.backward()
    grads = {n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("projector.") for n in grads)
    assert any("lora_B" in n for n in grads)
    assert all(n.startswith("projector.") or "lora_" in n for n in grads), grads
    assert not any(p.requires_grad for p in m.encoder.parameters())
    # even run on raw ids, the encoder keeps no graph
    out = m.encoder(batch_ids([notes[1][:10]])).last_hidden_state
    assert not out.requires_grad or not any(p.requires_grad for p in m.encoder.parameters())


def test_a_few_steps_reduce_the_loss(parts, notes):
    m = _model(parts, projector="mlp").add_lora(r=8, alpha=16, dropout=0.0)
    m.freeze_llm()
    m.train()
    feats = m.features(notes)
    answers = ["It is in G major.", "It is in C minor."]
    b = m.batch([encode_conversation(m.tokenizer, [("What key is this piece in?", a)]) for a in answers])
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = m(midi_features=feats, **b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.93 * losses[0], str([round(x, 3) for x in losses])


def test_save_load_round_trip(parts, notes, tmp_path):
    m = _model(parts, k=3, layers=(0, -1)).add_lora(r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # make the adapter non-trivial
        for n, p in m.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    m.eval()
    encs = [encode_conversation(m.tokenizer, [("What key is this piece in?", None)])] * 2
    feats = m.features(notes)
    m.set_feature_stats(feats.numpy() * 0.5 + 0.1)  # non-trivial standardisation, saved with the projector
    b = m.batch(encs, left_pad=True)
    with torch.no_grad():
        before = m(midi_features=feats, **b).logits
    text = m.generate(feats, encs, max_new_tokens=12, temperature=0.8, seed=3)
    m.save_pretrained(tmp_path / "model")
    m.save_pretrained(tmp_path / "whole", self_contained=True)
    # the peft convention: adapter, projector and tokenizer saved; the frozen base LLM and encoder referenced
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"adapter", "projector.safetensors", "midilm.json", "tokenizer"} <= names
    assert "llm" not in names and "encoder" not in names
    manifest = json.loads((tmp_path / "model" / "midilm.json").read_text())
    assert manifest["kind"] == "midi-llama" and manifest["base_llm"] == str((parts / "llm").resolve())
    assert manifest["encoder"] == str((parts / "encoder").resolve())
    adapter_cfg = json.loads((tmp_path / "model" / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == manifest["base_llm"]
    assert {"llm", "encoder"} <= {p.name for p in (tmp_path / "whole").iterdir()}
    for d in ("model", "whole"):
        assert not list((tmp_path / d).rglob("*.bin")) and not list((tmp_path / d).rglob("*.pt"))
    for merge, where in ((False, "model"), (True, "model"), (True, "whole")):
        again = MidiLlama.from_pretrained(tmp_path / where, merge_lora=merge)
        assert again.config.k == 3 and again.config.pool_layers == [0, -1]
        assert torch.equal(again.feature_std, m.feature_std) and torch.equal(again.feature_mean, m.feature_mean)
        f2 = again.features(notes)
        assert f2.shape == (2, 3, 64)  # embedding-layer and last-layer states side by side
        assert torch.allclose(feats, f2)
        with torch.no_grad():
            after = again(midi_features=f2, **b).logits
        assert torch.allclose(before, after, atol=1e-4)
        assert again.generate(f2, encs, max_new_tokens=12, temperature=0.8, seed=3) == text


def test_greedy_batch_matches_single(parts, notes):
    m = _model(parts)
    m.eval()
    qs = [("What key is this piece in?", None)], [("Describe this piece of music.", None)]
    encs = [encode_conversation(m.tokenizer, q) for q in qs]
    feats = m.features(notes)
    both = m.generate(feats, encs, max_new_tokens=10)
    one = [m.generate(feats[i : i + 1], encs[i : i + 1], max_new_tokens=10)[0] for i in range(2)]
    assert both == one


def test_empty_notes_rejected(parts):
    m = _model(parts)
    with pytest.raises(ValueError, match="no notes"):
        m.features([np.zeros((0, 8), dtype=np.int64)])


def test_pooling_the_embedding_layer_drops_the_unused_layers(parts, notes):
    from midilm.models.encoder import MusicBertModel, batch_ids

    full = MusicBertModel.from_pretrained(parts / "encoder").eval()
    m = _model(parts, k=1, layers=(0,))
    assert len(m.encoder.layers) == 0 and m.encoder.config.num_hidden_layers == 0
    w = notes[1][:64]
    with torch.no_grad():
        expected = full(batch_ids([w]), output_hidden_states=True).hidden_states[0][0, 1 : 1 + len(w)].mean(0)
    assert torch.allclose(m.features([w])[0, 0], expected, atol=1e-5)


def test_pooling_the_field_embeddings_keeps_every_field_apart(parts, notes, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midilm.models.encoder import MusicBertModel, batch_ids

    enc = MusicBertModel.from_pretrained(parts / "encoder")
    table = enc.embed_tokens.weight.detach().clone()
    cfg = MidiLlamaConfig(encoder_hidden=8 * 32, llm_hidden=32, k=1, max_windows=3, pool_layers=[0], pool_fields=True)
    llm, tok = AutoModelForCausalLM.from_pretrained(parts / "llm"), AutoTokenizer.from_pretrained(parts / "llm")
    m = MidiLlama(enc, llm, tok, cfg)
    assert len(m.encoder.layers) == 0
    w = notes[1][:64]
    ids = batch_ids([w])[0, 8 : 8 * (1 + len(w))].view(-1, 8)  # the notes' ids, without <s> and </s>
    expected = table[ids].mean(0).reshape(-1)  # field f of the pooled vector = mean embedding of field f's ids
    got = m.features([w])[0, 0]
    assert got.shape == (8 * 32,) and torch.allclose(got, expected, atol=1e-6)
    m.save_pretrained(tmp_path / "m")
    again = MidiLlama.from_pretrained(tmp_path / "m")
    assert again.config.pool_fields and torch.allclose(again.features([w])[0, 0], got, atol=1e-6)


def test_loading_in_bf16_halves_the_llm_and_still_answers(parts, notes, tmp_path):
    m = _model(parts)
    m.save_pretrained(tmp_path / "m")
    again = MidiLlama.from_pretrained(tmp_path / "m", dtype="bf16")
    assert {p.dtype for p in again.llm.parameters()} == {torch.bfloat16}
    assert again.projector.weight.dtype == torch.float32  # the small projector stays fp32
    enc = [encode_conversation(again.tokenizer, [("What key is this piece in?", None)])]
    assert isinstance(again.generate(again.features(notes[:1]), enc, max_new_tokens=4)[0], str)
    with pytest.raises(ValueError, match="dtype"):
        MidiLlama.from_pretrained(tmp_path / "m", dtype="int3")


def test_a_chat_template_frames_the_conversation_and_only_answers_are_targets(parts):
    from transformers import AutoTokenizer

    from midilm.models.conversation import SYSTEM, uses_chat_template

    tok = AutoTokenizer.from_pretrained(parts / "llm")
    assert not uses_chat_template(tok)
    plain = encode_conversation(tok, [("What key is this piece in?", "It is in G major.")])
    assert tok.decode(plain.before).startswith(SYSTEM[:10]) or SYSTEM[:10] in tok.decode(plain.before)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert uses_chat_template(tok)
    turns = [("What key is this piece in?", "It is in G major."), ("And the meter?", "It is in 3/4 time.")]
    enc = encode_conversation(tok, turns)
    assert tok.decode(enc.before).replace(" ", "").startswith("<|system|>")
    assert tok.decode(enc.before).replace(" ", "").endswith("<|user|>")  # the MIDI slot opens the user turn
    after = tok.decode(enc.after).replace(" ", "")
    assert after.startswith("\nWhatkey") and "<|assistant|>ItisinGmajor.</s><|user|>Andthemeter?" in after
    targets = tok.decode([t for t, y in zip(enc.after, enc.labels) if y != IGNORE]).replace(" ", "")
    assert targets == "ItisinGmajor.</s>Itisin3/4time.</s>"
    ask = encode_conversation(tok, [("What key is this piece in?", None)])
    assert tok.decode(ask.after).replace(" ", "").endswith("<|assistant|>") and set(ask.labels) == {IGNORE}


def test_pitch_class_profile_weights_by_duration_skips_drums_and_moves_with_transposition(notes):
    from midilm.codecs.octuple import FIELDS, duration_code
    from midilm.models.midi_llama import pitch_class_profile
    from midilm.models.notes import transpose_notes

    n = np.zeros((3, 8), dtype=np.int64)
    n[:, FIELDS.index("pitch")] = (60, 64, 38 + 128)  # C4, E4 and a drum (pitched drums sit at pitch + 128)
    n[:, FIELDS.index("program")] = (0, 0, 128)
    n[:, FIELDS.index("duration")] = (duration_code(48), duration_code(16), duration_code(64))  # 3 beats, 1 beat
    p = pitch_class_profile(n)
    assert p.shape == (12,) and p.dtype == np.float32
    assert np.allclose(p[[0, 4]], [0.75, 0.25]) and np.isclose(p.sum(), 1.0)  # the drum counts for nothing
    assert not pitch_class_profile(n[2:]).any()  # drums alone: no profile
    real = pitch_class_profile(notes[0])
    for s in (-5, 1, 7):  # transposing the notes rolls the profile by as many pitch classes
        assert np.allclose(pitch_class_profile(transpose_notes(notes[0], s)), np.roll(real, s), atol=1e-6)


def test_widening_for_pitch_classes_keeps_the_answers_then_reads_them_and_round_trips(parts, notes, tmp_path):
    from midilm.models.midi_llama import pitch_class_profile

    for projector in ("linear", "mlp"):
        m = _model(parts, k=2, projector=projector).add_lora(r=4, alpha=8, dropout=0.0)
        m.eval()
        encs = [encode_conversation(m.tokenizer, [("What key is this piece in?", None)])] * 2
        b = m.batch(encs, left_pad=True)
        feats = m.features(notes)
        with torch.no_grad():
            before = m(midi_features=feats, **b).logits
        assert m.add_pitch_classes() == 32 and m.config.pitch_classes and m.config.encoder_hidden == 44
        wide = m.features(notes)
        assert wide.shape == (2, 2, 44) and torch.allclose(wide[..., :32], feats)
        assert torch.allclose(wide[0, 1, 32:], torch.from_numpy(pitch_class_profile(notes[0])))  # every vector
        with torch.no_grad():  # new input columns start at zero: the same answers (float sums: a tolerance)
            assert torch.allclose(m(midi_features=wide, **b).logits, before, atol=1e-5)
        m.set_feature_stats(wide.numpy(), start=32, gain=4.0)
        assert torch.equal(m.feature_mean[:32], torch.zeros(32)) and m.feature_mean[32:].abs().sum() > 0
        assert torch.equal(m.feature_std[:32], torch.ones(32))
        spread = ((wide.reshape(-1, 44) - m.feature_mean) / m.feature_std)[:, 32:].std(0)
        moving = wide.reshape(-1, 44)[:, 32:].std(0) > 1e-3  # pitch classes the two pieces differ in
        assert torch.allclose(spread[moving], torch.full_like(spread[moving], 4.0), rtol=1e-3)
        with pytest.raises(ValueError, match="already"):
            m.add_pitch_classes()
        first = m.projector if projector == "linear" else m.projector[0]
        with torch.no_grad():
            first.weight[:, 32:].normal_(0, 1.0)  # now the profile matters
            after = m(midi_features=wide, **b).logits
        assert not torch.allclose(after, before, atol=1e-3)
        m.save_pretrained(tmp_path / projector)
        again = MidiLlama.from_pretrained(tmp_path / projector)
        assert again.config.pitch_classes and again.config.encoder_hidden == 44
        with torch.no_grad():
            assert torch.allclose(again(midi_features=again.features(notes), **b).logits, after, atol=1e-4)


def test_key_evidence_moves_with_transposition_and_ignores_drums(notes):
    from midilm.codecs.octuple import FIELDS
    from midilm.models.midi_llama import KEY_EVIDENCE, key_evidence, roll_keys
    from midilm.models.notes import transpose_notes

    ev = key_evidence(notes[0])
    assert ev.shape == (12, KEY_EVIDENCE * 12) and ev.dtype == np.float32 and np.isfinite(ev).all()
    for s in (-5, 2, 7):  # the evidence for tonic t of the original is that for tonic t + s of the transposed copy
        assert np.allclose(key_evidence(transpose_notes(notes[0], s)), np.roll(ev, s, axis=0), atol=1e-6)
    drums = np.array(notes[0], copy=True)
    drums[:, FIELDS.index("program")] = 128
    assert not key_evidence(drums).any()
    p = np.arange(24.0)
    rolled = roll_keys(p, 3)  # each mode's tonics move up three pitch classes, the modes stay apart
    assert rolled[3] == 0 and rolled[15] == 12 and rolled[0] == 9 and rolled[12] == 21


def test_key_pathway_learns_keys_adds_one_prefix_slot_and_round_trips(parts, notes, tmp_path):
    from midilm.models.midi_llama import KEY_NAMES, key_evidence, key_index
    from midilm.models.notes import transpose_notes

    assert key_index("G major") == 7 and key_index("E minor") == 16 and key_index("Db major") == 1
    assert key_index("H major") is None and key_index("") is None and KEY_NAMES[16] == "E minor"
    m = _model(parts, k=2).add_lora(r=4, alpha=8, dropout=0.0)
    kp = m.add_key_pathway()
    assert m.config.key_pathway and m.config.slots == 3
    with pytest.raises(ValueError, match="already"):
        m.add_key_pathway()
    table = m.llm.get_input_embeddings().weight
    ids = m.tokenizer(" G major", add_special_tokens=False).input_ids
    assert torch.allclose(kp.embeddings[7], table[ids].sum(0))  # starts at the key name's own embeddings
    # two "keys" the classifier must tell apart: the example piece in its own key (label 0) and a tritone away
    shifts = list(range(12))
    ev = np.stack([key_evidence(transpose_notes(n, s)) for n in notes for s in shifts])
    labels = np.array([s for _ in notes for s in shifts])  # "C major" moved by s: tonic s
    assert kp.fit(ev, labels, steps=300) == 1.0  # equivariant scores: one piece's transpositions all learned
    probs = kp.probs([transpose_notes(notes[0], 5)])
    assert probs.shape == (1, 24) and int(probs.argmax()) == 5 and torch.isclose(probs.sum(), torch.tensor(1.0))
    feats = m.features(notes)
    assert feats.shape == (2, 2, 32 + 24)  # the music vectors, then the key distribution
    encs = [encode_conversation(m.tokenizer, [("What key is this piece in?", None)])] * 2
    b = m.batch(encs, left_pad=True)
    m.eval()
    with torch.no_grad():
        before = m(midi_features=feats, **b).logits
        other = feats.clone()
        other[..., 32:] = torch.roll(other[..., 32:], 6, dims=-1)  # another key: another prefix, other answers
        assert not torch.allclose(m(midi_features=other, **b).logits, before, atol=1e-4)
    m.save_pretrained(tmp_path / "kp")
    again = MidiLlama.from_pretrained(tmp_path / "kp")
    assert again.config.key_pathway and again.config.slots == 3
    assert torch.equal(again.key_pathway.scorer.weight, kp.scorer.weight)
    with torch.no_grad():  # merged LoRA vs separate: float sums differ in the last bits, hence a tolerance
        assert torch.allclose(again(midi_features=again.features(notes), **b).logits, before, atol=1e-4)


def test_key_guide_names_the_classifiers_key_only_where_the_lm_names_one():
    from pathlib import Path

    from transformers import AutoTokenizer

    from midilm.models.midi_llama import KEY_NAMES, key_name_paths
    from midilm.models.name_guide import NameGuide

    tok = AutoTokenizer.from_pretrained(Path(__file__).parents[1] / "src/midilm/data/models/midilm-understand-tiny/llm")
    ids = {w: tok(w, add_special_tokens=False).input_ids[0] for w in (" in", " C", " G", " D", " major", " minor", "A",
                                                                      "#", " pop", ".", "D")}
    probs = torch.zeros(1, 24)
    probs[0, KEY_NAMES.index("D major")], probs[0, KEY_NAMES.index("B minor")] = 0.7, 0.3
    guide = NameGuide(key_name_paths(tok), probs, strength=4.0, gate=0.3, ambiguous=frozenset({ids["A"], ids["D"]}))
    vocab = len(tok)

    def scores(pref: dict[str, float]) -> torch.Tensor:
        s = torch.full((1, vocab), -20.0)
        for w, v in pref.items():
            s[0, ids[w]] = v
        return s

    def step(generated: list[str], s: torch.Tensor) -> torch.Tensor:
        return guide(torch.tensor([[ids[w] for w in generated]], dtype=torch.long), s).log_softmax(-1)[0]

    # after "in" the LM is about to name a key but guesses C or G: the classifier's D takes their share
    before = scores({" C": 2.0, " G": 1.5, " D": 0.0, ".": 0.0}).log_softmax(-1)[0]
    after = step([" in"], scores({" C": 2.0, " G": 1.5, " D": 0.0, ".": 0.0}))
    assert int(after.argmax()) == ids[" D"]
    assert torch.isclose(after[ids["."]], before[ids["."]], atol=1e-5)  # the rest keeps its probability
    key_comma = tok(" key,", add_special_tokens=False).input_ids  # "in a minor key, B minor."
    after_comma = guide(torch.tensor([key_comma]), scores({" C": 2.0, " G": 1.5, " D": 0.0})).log_softmax(-1)[0]
    assert int(after_comma.argmax()) == ids[" D"]
    # a name begun after its trigger is finished with the mode the classifier gives that tonic
    assert int(step([" in", " D"], scores({"#": 3.0, " minor": 1.0, " major": 0.0})).argmax()) == ids[" major"]
    # the article that starts a caption ("A pop piece") is no key name: nothing changes there or after it
    cap = scores({"A": 5.0, " C": 0.0})
    assert torch.allclose(step([], cap), cap.log_softmax(-1)[0], atol=1e-5)
    pop = scores({" pop": 5.0, " minor": 0.0})
    assert torch.allclose(step(["A"], pop), pop.log_softmax(-1)[0], atol=1e-5)
    # nor where the answer starts with a word that starts with a tonic letter ("Drums.")
    drums = scores({"D": 4.0, "A": 0.0, " C": 0.0})
    assert torch.allclose(step([], drums), drums.log_softmax(-1)[0], atol=1e-5)
    # where no key name can follow, nothing changes
    other = scores({" C": 2.0, " G": 1.5})
    assert torch.allclose(step([" pop"], other), other.log_softmax(-1)[0], atol=1e-5)


def _shipped_tokenizer():
    from pathlib import Path

    from transformers import AutoTokenizer

    shipped = Path(__file__).parents[1] / "src/midilm/data/models/midilm-understand-tiny"
    return AutoTokenizer.from_pretrained(shipped / "llm")


def _guided_step(guide, tok, generated: str, prefs: dict[str, float]) -> torch.Tensor:
    """The guide's log-probabilities after `generated` (token ids of the text) where the LM's scores are -20
    except the first tokens of the words in `prefs`."""
    s = torch.full((1, len(tok)), -20.0)
    for w, v in prefs.items():
        s[0, tok(w, add_special_tokens=False).input_ids[0]] = v
    ids = tok(generated, add_special_tokens=False).input_ids if generated else []
    return guide(torch.tensor([ids], dtype=torch.long), s).log_softmax(-1)[0]


def test_genre_guide_opens_the_caption_with_the_classifiers_phrase_and_leaves_other_answers_alone():
    from midilm.models.midi_llama import genre_name_paths
    from midilm.models.name_guide import NameGuide, single_tokens

    tok = _shipped_tokenizer()
    first = {w: tok(w, add_special_tokens=False).input_ids[0] for w in (" classical", " video", " folk", " minor", ".")}
    classes = [["classical", "string quartet"], ["video game", "piece"], ["folk", "reel"]]
    probs = torch.tensor([[0.9, 0.05, 0.05]])
    guide = NameGuide(genre_name_paths(tok, classes), probs, strength=1.0, gate=0.3,
                      ambiguous=single_tokens(tok, tuple("ABCDEFG") + ("An",)), lm_weight=0.25)
    # after the caption's "A" the LM is sure of "video game", the classifier of "classical": the classifier wins
    after_a = _guided_step(guide, tok, "A", {" video": 6.0, " classical": 0.0, ".": 2.0})
    assert int(after_a.argmax()) == first[" classical"]
    assert after_a[first["."]] == -torch.inf  # a phrase is due there: nothing else may follow the article
    # a begun phrase is finished as one of the classes' phrases ("A classical" -> "... string quartet")
    begun = tok("A classical", add_special_tokens=False).input_ids
    rest = tok("A classical string quartet", add_special_tokens=False).input_ids[len(begun)]
    assert int(_guided_step(guide, tok, "A classical", {".": 3.0}).argmax()) == rest
    # "A minor." (a mode answer) is no genre: where the LM gives the phrases almost nothing, nothing changes
    mode = _guided_step(guide, tok, "A", {" minor": 8.0, " video": -6.0})
    s = torch.full((1, len(tok)), -20.0)
    s[0, first[" minor"]], s[0, first[" video"]] = 8.0, -6.0
    assert torch.allclose(mode, s.log_softmax(-1)[0], atol=1e-5)
    # the genre word of an answer ("The piece belongs to the ... genre.") is the classifier's as well
    word = _guided_step(guide, tok, "The piece belongs to the", {" folk": 5.0, " classical": 0.0})
    assert int(word.argmax()) == first[" classical"]


def test_instrument_guide_names_only_instruments_the_notes_hold_each_once():
    from midilm.models.midi_llama import INSTRUMENT_WORDS, instrument_name_paths, instrument_shares
    from midilm.models.name_guide import NameGuide

    tok = _shipped_tokenizer()
    first = {w: tok(w, add_special_tokens=False).input_ids[0] for w in (" drums", " violin", " viola", " cello", " in")}
    notes = np.array([[0, 0, p, 60, 4, 20, 0, 0] for p in (40, 41, 42, 42)])  # violin, viola and cello programs
    shares = instrument_shares(notes)
    assert {INSTRUMENT_WORDS[i]: float(shares[i]) for i in np.flatnonzero(shares)} == {"violin": 0.25, "viola": 0.25,
                                                                                       "cello": 0.5}
    present = (shares > 0).astype(np.float32)
    guide = NameGuide(instrument_name_paths(tok), torch.from_numpy(present)[None], strength=1.0, gate=0.3,
                      exclusive=True, hard=True)
    # after "for" an instrument is due: the LM's drums (not in the notes) give way to the strings
    after_for = _guided_step(guide, tok, "A classical string quartet for", {" drums": 6.0, " violin": 1.0,
                                                                             " in": 3.0})
    assert int(after_for.argmax()) == first[" violin"]
    assert after_for[first[" drums"]] == -torch.inf
    # a named instrument is not named again
    again = _guided_step(guide, tok, "A classical string quartet for violin,", {" violin": 6.0, " viola": 0.0})
    assert int(again.argmax()) == first[" viola"]
    # with every instrument named, the list ends where the LM would name drums
    done = _guided_step(guide, tok, "A classical string quartet for violin, viola and cello,", {" drums": 6.0,
                                                                                                " in": 2.0})
    assert int(done.argmax()) == first[" in"]
    # a letter that may start any word (" m" of "marimba", of a rare "moderato") is not removed where the LM is not
    # naming an instrument, although no marimba plays
    m = tok(" m", add_special_tokens=False).input_ids[0]
    loose = NameGuide(instrument_name_paths(tok), torch.from_numpy(present)[None], strength=1.0, gate=0.3,
                      ambiguous=frozenset({m}), exclusive=True, hard=True)
    s = torch.full((1, len(tok)), -20.0)
    s[0, m], s[0, first[" drums"]] = 2.0, 0.0
    kept = loose(torch.tensor([tok("at a", add_special_tokens=False).input_ids]), s).log_softmax(-1)[0]
    assert int(kept.argmax()) == m and kept[first[" drums"]] == -torch.inf
    # outside an instrument list nothing changes
    s = torch.full((1, len(tok)), -20.0)
    s[0, first[" in"]] = 2.0
    assert torch.allclose(_guided_step(guide, tok, "The piece", {" in": 2.0}), s.log_softmax(-1)[0], atol=1e-5)


def test_genre_pathway_fits_saves_and_loads(tmp_path):
    from midilm.models.midi_llama import GENRE_TRAITS, GenrePathway, piece_traits

    drums = np.array([[b, p, 128, 164, 2, 25, 0, 40] for b in range(8) for p in (0, 8, 16, 24)])
    strings = np.array([[b, 0, prog, 60 + prog - 40, 8, 16, 0, 30] for b in range(8) for prog in (40, 41, 42, 42)])
    t_drums, t_strings = piece_traits(drums), piece_traits(strings)
    assert t_drums.shape == (GENRE_TRAITS,) and t_drums[0] == 1.0 and t_strings[0] == 0.0  # the drum share
    rng = np.random.default_rng(0)
    x = np.concatenate([t_drums + rng.normal(0, 0.01, (20, GENRE_TRAITS)),
                        t_strings + rng.normal(0, 0.01, (20, GENRE_TRAITS))]).astype(np.float32)
    y = np.repeat([0, 1], 20)
    gp = GenrePathway(2)
    assert gp.fit(x, y, np.r_[np.full(20, 0.5), np.full(20, 2.0)], steps=100) == 1.0
    p = gp.probs([drums, strings])
    assert int(p[0].argmax()) == 0 and int(p[1].argmax()) == 1


def test_list_guide_writes_the_notes_instrument_list_where_the_caption_begins_it():
    from midilm.models.midi_llama import instrument_list, instrument_name_paths, instrument_shares
    from midilm.models.name_guide import ListGuide, token_ids

    tok = _shipped_tokenizer()
    band = np.array([[0, 0, p, 60, 4, 20, 0, 0] for p in [128] * 5 + [81] * 3 + [35] * 2 + [29]])  # drums first
    text = instrument_list(instrument_shares(band))
    assert text == "drums, synth lead, fretless bass and overdriven guitar"
    span = token_ids(tok, " " + text)
    starts = frozenset(p.tokens[0] for p in instrument_name_paths(tok))
    guide = ListGuide([token_ids(tok, " for")], [span], starts, gate=0.01, closed=frozenset(token_ids(tok, " and")))
    prefix = tok("A video game piece for", add_special_tokens=False).input_ids
    written = []
    for _ in range(len(span)):  # the LM wants "drums, drums, ..." (v3's band captions); the list is written instead
        s = torch.full((1, len(tok)), -20.0)
        s[0, token_ids(tok, " drums")[0]] = 5.0
        s[0, token_ids(tok, ",")[0]] = 4.0
        written.append(int(guide(torch.tensor([prefix + written]), s).argmax()))
    assert tok.decode(written) == " " + text
    s = torch.full((1, len(tok)), -20.0)
    s[0, token_ids(tok, ",")[0]] = 4.0
    s[0, token_ids(tok, " and")[0]] = 5.0
    after = guide(torch.tensor([prefix + written]), s)  # then the LM goes on (", in F major ..."), not with " and"
    assert int(after.argmax()) == token_ids(tok, ",")[0] and after[0, token_ids(tok, " and")[0]] == -torch.inf
    # where the LM would not name an instrument after "for" ("known for its ..."), nothing is written
    other = torch.full((1, len(tok)), -20.0)
    other[0, token_ids(tok, " its")[0]] = 5.0
    assert torch.equal(guide(torch.tensor([tok("known for", add_special_tokens=False).input_ids]), other), other)


def test_question_kind_reads_what_a_question_asks_for():
    from midilm.annotate.questions import QUESTIONS
    from midilm.models.name_guide import question_kind

    asked = {"key": "key", "mode": "mode", "instruments": "instruments", "genre": "genre"}
    for qtype, questions in QUESTIONS.items():  # every phrasing the training data asks in
        for q in questions:
            assert question_kind("Please explain. " + q) == asked.get(qtype, ""), (qtype, q)
    users = {"What instruments are in this?": "instruments", "What is playing?": "instruments",
             "Who's playing here?": "instruments", "What style is this?": "genre", "What kind of music is it?": "genre",
             "Is it major or minor?": "mode", "What key?": "key", "How many instruments are there?": "",
             "Which instrument plays the melody?": "", "Is the tempo fast?": "", None: ""}
    for q, kind in users.items():
        assert question_kind(q) == kind, q


def test_an_asked_name_opens_the_short_answer_and_ends_it():
    from midilm.models.midi_llama import _OPENERS, genre_name_paths, key_name_paths
    from midilm.models.name_guide import NameGuide, single_tokens, token_ids

    tok = _shipped_tokenizer()
    classes = [["classical", "string quartet"], ["folk", "reel"]]
    openers, end = single_tokens(tok, _OPENERS), token_ids(tok, ".") + (tok.eos_token_id,)

    def guide(kind: str) -> NameGuide:
        return NameGuide(genre_name_paths(tok, classes), torch.tensor([[0.9, 0.1]]), strength=1.0, gate=0.3,
                         ambiguous=single_tokens(tok, tuple("ABCDEFG")), lm_weight=0.25, asked=[kind],
                         openers=openers, end=end)

    folk, the, c = (token_ids(tok, w)[0] for w in ("Folk", "The", "C"))
    classical = token_ids(tok, "Classical")
    # "What genre is this?": the LM's "Folk" (or a key: "C minor") gives way to the classifier's genre
    first = _guided_step(guide("genre"), tok, "", {"Folk": 5.0, "C": 4.0, "Classical": 0.0})
    assert int(first.argmax()) == classical[0] and first[c] == -torch.inf
    # the asked name is finished and the short answer ends after it ("Classical.")
    assert int(_guided_step(guide("genre"), tok, "Cla", {" music": 5.0}).argmax()) == classical[1]
    assert int(_guided_step(guide("genre"), tok, "Classical", {" music": 5.0}).argmax()) == end[0]
    eos = guide("genre")(torch.tensor([list(classical) + [end[0]]]), torch.zeros((1, len(tok))))
    assert int(eos.argmax()) == tok.eos_token_id
    # where the LM begins a sentence ("The piece belongs to the ... genre."), nothing is forced at the start
    s = torch.full((1, len(tok)), -20.0)
    s[0, the], s[0, folk] = 5.0, 4.0
    assert torch.allclose(guide("genre")(torch.zeros((1, 0), dtype=torch.long), s), s)
    # and where the question asks for something else, its answer's start is the LM's as before (v4)
    for kind in ("instruments", ""):
        assert int(_guided_step(guide(kind), tok, "", {"C": 5.0, "Classical": 0.0}).argmax()) == c
    # a mode question is answered by a mode word, the key classifier's mode, never by a key name
    probs = torch.zeros((1, 24))
    probs[0, 19] = 1.0  # G minor (keys 12-23 are the minor ones)
    keys = NameGuide(key_name_paths(tok), probs, strength=4.0, gate=0.3, ambiguous=single_tokens(tok, tuple("ABCDEFG")),
                     asked=["mode"], openers=openers, end=end)
    mode = _guided_step(keys, tok, "", {"Major": 5.0, "C": 4.0, "Minor": 0.0})
    assert int(mode.argmax()) == token_ids(tok, "Minor")[0] and mode[c] == -torch.inf


def test_an_instruments_question_is_answered_by_the_notes_list():
    from midilm.models.midi_llama import _OPENERS, instrument_list, instrument_name_paths, instrument_shares
    from midilm.models.name_guide import ListGuide, single_tokens, token_ids

    tok = _shipped_tokenizer()
    strings = np.array([[0, 0, p, 60, 4, 20, 0, 0] for p in (40, 41, 42, 42)])
    text = instrument_list(instrument_shares(strings), None)
    assert text == "cello, violin and viola"
    span = token_ids(tok, "Cello, violin and viola.") + (tok.eos_token_id,)
    starts = frozenset(p.tokens[0] for p in instrument_name_paths(tok))
    guide = ListGuide([()], [span], starts, gate=0.0, openers=single_tokens(tok, _OPENERS))
    written: list[int] = []
    for _ in range(len(span)):  # the LM would answer "C minor" (v4 on the Beach quartet): the list is written
        s = torch.full((1, len(tok)), -20.0)
        s[0, token_ids(tok, "C")[0]] = 5.0
        s[0, token_ids(tok, " minor")[0]] = 5.0
        written.append(int(guide(torch.tensor([written], dtype=torch.long), s).argmax()))
    assert tok.decode(written, skip_special_tokens=True) == "Cello, violin and viola."
    assert written[-1] == tok.eos_token_id
    # an answer the LM begins as a sentence ("The piece is played by ...") is left to it (and the answer guides)
    s = torch.full((1, len(tok)), -20.0)
    s[0, token_ids(tok, "The")[0]] = 5.0
    assert torch.equal(guide(torch.zeros((1, 0), dtype=torch.long), s), s)
