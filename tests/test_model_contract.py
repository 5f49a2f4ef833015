"""The model contract of `cdatlib.models.core`, checked on every fusion model: `encode` -> parts, `fuse(parts, drop)`,
`aux_losses(parts, out, batch)`, `forward = encode + fuse + aux_losses`, per-sample drops batched in one call.
Models are small configurations built on the shapes of the files in data_samples/, in eval mode, seeds fixed."""
from pathlib import Path

import pytest
import torch
from torch import nn

from cdatlib.dataset import MODALITIES
from cdatlib.formats import load_dataset
from cdatlib.models.core import FusionModel, check_drop, drop_each_modality, repeat_parts
from cdatlib.models.misa import MISA
from cdatlib.models.naive import NaiveFusion
from cdatlib.models.tailor import TAILOR
from cdatlib.models.tfn import TFN

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / 'data_samples'
TINY_TAILOR = dict(hidden_size=16, num_heads=2, ff_dim=32, text_layers=1, audio_layers=1, vision_layers=1,
                   cross_layers=1, decoder_layers=1, max_len=16)
SMALL_TFN = dict(hidden={'text': 8, 'audio': 4, 'vision': 4}, out={'text': 5, 'audio': 3, 'vision': 3}, post_fusion_dim=16)

MODELS = {
    'naive': lambda d, n, data: NaiveFusion(d, n, hidden=6, head_hidden=8),
    'naive_lstm': lambda d, n, data: NaiveFusion(d, n, hidden=6, head_hidden=8, encoder='lstm'),
    'tfn': lambda d, n, data: TFN(d, n, **SMALL_TFN),
    'tfn_mmsa': lambda d, n, data: TFN(d, n, config='mmsa_mosi', **SMALL_TFN),
    'misa': lambda d, n, data: MISA(d, n, hidden_size=8, ff_dim=16, rnn_hidden={m: 6 for m in MODALITIES}),
    'tailor': lambda d, n, data: TAILOR(d, n, **{**TAILOR.data_args(data.train.seq_lens, data.task), **TINY_TAILOR}),
}
# aligned with no padding (the encoders' fast path), aligned with left padding, unaligned (TAILOR: CTC)
FILES = {'mosei_full': 'tailor_mosei_aligned.pt', 'mosi_padded': 'mmsa_mosi_aligned_50.pkl',
         'mosei_unaligned': 'mult_mosei_senti_unaligned.pkl'}
CASES = [(m, f) for m in MODELS for f in FILES if f != 'mosei_unaligned' or m == 'tailor']
B = 5


@pytest.fixture(scope='module')
def datasets(): return {k: load_dataset(SAMPLES / v) for k, v in FILES.items()}


def build(name, file, datasets):
    data = datasets[file]
    torch.manual_seed(0)
    model = MODELS[name](data.dims, data.task.n_outputs, data).eval()
    batch = data.train.batch(torch.arange(B))
    return model, batch


def close(a, b, tol=1e-5): return torch.allclose(a, b, atol=tol, rtol=tol)


@pytest.fixture(params=CASES, ids=[f'{m}-{f}' for m, f in CASES])
def case(request, datasets):
    torch.set_num_threads(1)
    return build(*request.param, datasets)


DROPS = [(), 'text', ('audio',), ['audio', 'vision'], 'per_sample']

@pytest.mark.parametrize('drop', DROPS, ids=[str(d) for d in DROPS])
def test_fuse_of_encode_is_forward(case, drop):
    model, batch = case
    if drop == 'per_sample': drop = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = model(batch, drop=drop)
        parts = model.encode(batch)
        fused = model.fuse(parts, drop)
        aux = model.aux_losses(parts, fused, batch)
    assert torch.equal(fused.logits, out.logits) and torch.equal(fused.z, out.z)
    assert all(torch.equal(fused.h[m], out.h[m]) for m in MODALITIES)
    assert fused.aux_losses == {}                      # fuse never computes auxiliary losses
    assert sorted(aux) == sorted(out.aux_losses) and all(torch.equal(aux[k], out.aux_losses[k]) for k in aux)
    assert out.parts is not None
    with torch.no_grad(): again = model.fuse(out.parts, drop)   # an add-on re-fuses without re-encoding
    assert torch.equal(again.logits, out.logits)


def test_batched_drops_equal_separate_calls(case):
    "One fuse on 3B samples (each modality dropped in turn) = three fuse calls on B samples"
    model, batch = case
    with torch.no_grad():
        parts = model.encode(batch)
        parts3, drop3 = drop_each_modality(parts)
        assert drop3.shape == (3 * B, 3) and drop3.sum(1).eq(1).all()
        batched = model.fuse(parts3, drop3)
        for k, m in enumerate(MODALITIES):
            sep = model.fuse(parts, m)
            rows = slice(k * B, (k + 1) * B)
            assert close(batched.logits[rows], sep.logits), (m, (batched.logits[rows] - sep.logits).abs().max())
            assert close(batched.z[rows], sep.z)
            for n in MODALITIES: assert close(batched.h[n][rows], sep.h[n])
            assert batched.h[m][rows].abs().sum() == 0


def test_per_sample_drop_row_by_row(case):
    "A mixed (B, 3) drop tensor: each row equals the call that drops that row's modalities for the whole batch"
    model, batch = case
    drop = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    with torch.no_grad():
        parts = model.encode(batch)
        mixed = model.fuse(parts, drop)
        for b in range(B):
            names = [m for m, d in zip(MODALITIES, drop[b].tolist()) if d]
            assert close(mixed.logits[b], model.fuse(parts, names).logits[b]), (b, names)


def test_dropping_changes_exactly_that_modality(case):
    model, batch = case
    with torch.no_grad():
        full = model(batch)
        for m in MODALITIES:
            out = model(batch, drop=m)
            assert out.h[m].abs().sum() == 0, m
            for n in MODALITIES:
                if n != m: assert torch.equal(out.h[n], full.h[n]), (m, n)
            assert not torch.allclose(out.logits, full.logits), m
            assert sorted(out.aux_losses) == sorted(full.aux_losses)
            assert all(torch.equal(out.aux_losses[k], full.aux_losses[k]) for k in out.aux_losses)  # before the masking point


def test_h_masks_fit_h(case):
    model, batch = case
    with torch.no_grad(): out = model(batch)
    seq = out.h['text'].dim() == 3
    if not seq: assert out.h_masks is None
    else:
        for m in MODALITIES:
            assert out.h_masks[m].shape == out.h[m].shape[:2] and out.h_masks[m].dtype == torch.bool
            assert out.h[m][~out.h_masks[m]].abs().sum() == 0   # h is zero at the steps the mask calls padding


def test_tailor_unaligned_h_masks_have_text_length(datasets):
    model, batch = build('tailor', 'mosei_unaligned', datasets)
    assert not model.aligned
    with torch.no_grad(): out = model(batch)
    L = batch['text'].shape[1]
    assert batch['audio'].shape[1] != L
    for m in ('audio', 'vision'):
        assert out.h[m].shape[1] == L and torch.equal(out.h_masks[m], batch['text_mask'])


def test_tailor_discriminator_runs_only_in_aux_losses(datasets):
    "Masked fuse passes do not recompute TAILOR's auxiliary losses (the discriminator runs 6 times per batch, in aux_losses)"
    model, batch = build('tailor', 'mosei_full', datasets)
    calls = []
    model.discriminator.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        out = model(batch)
        assert len(calls) == 6
        for m in MODALITIES: model.fuse(out.parts, m)
        model.fuse(*drop_each_modality(out.parts))
    assert len(calls) == 6


def test_a_new_model_gets_the_seam_for_free():
    "A subclass that writes only encode and fuse is callable with drop=, and its aux_losses default to none"
    class Tiny(FusionModel):
        def __init__(self):
            super().__init__({m: 2 for m in MODALITIES}, 1)
            self.lin = nn.Linear(6, 1)
        def encode(self, batch): return {'h': {m: batch[m].mean(1) for m in MODALITIES}}
        def fuse(self, parts, drop=()):
            from cdatlib.models.core import FusionOutput
            drop = check_drop(drop)
            h = {m: self.mask_repr(m, parts['h'][m], drop) for m in MODALITIES}
            z = torch.cat(list(h.values()), -1)
            return FusionOutput(h, z, self.lin(z))
    torch.manual_seed(0)
    batch = {m: torch.randn(4, 3, 2) for m in MODALITIES}
    model = Tiny()
    out = model(batch, drop='vision')
    assert out.aux_losses == {} and out.h['vision'].abs().sum() == 0 and out.parts['h']['vision'].abs().sum() > 0
    assert torch.equal(model.fuse(out.parts, 'vision').logits, out.logits)


def test_check_drop_errors():
    assert check_drop('text') == ('text',) and check_drop(None) == () and check_drop(['audio', 'vision']) == ('audio', 'vision')
    with pytest.raises(ValueError, match=r"cannot drop \['smell'\]"): check_drop(['text', 'smell'])
    with pytest.raises(ValueError, match=r'\(B, 3\)'): check_drop(torch.zeros(4, 2, dtype=torch.bool))
    assert check_drop(torch.tensor([[1, 0, 0]])).dtype == torch.bool
    model = NaiveFusion({m: 2 for m in MODALITIES}, 1)
    with pytest.raises(ValueError, match='rows'): model(
        {m: torch.randn(4, 3, 2) for m in MODALITIES}, drop=torch.zeros(3, 3, dtype=torch.bool))


def test_repeat_parts_and_drop_each_modality():
    parts = {'h': {'a': torch.arange(2)}, 'ctc': {'audio': (torch.ones(2, 3), torch.tensor([3, 1]))}, 'k': 7, 'none': None}
    rep = repeat_parts(parts, 3)
    assert rep['h']['a'].tolist() == [0, 1] * 3 and rep['ctc']['audio'][1].tolist() == [3, 1] * 3
    assert rep['ctc']['audio'][0].shape == (6, 3) and rep['k'] == 7 and rep['none'] is None
    parts3, drop = drop_each_modality(parts)
    assert drop.tolist() == [[True, False, False]] * 2 + [[False, True, False]] * 2 + [[False, False, True]] * 2
    with pytest.raises(ValueError, match='batch'): drop_each_modality({'k': 1})


# --- slips of issue 8 -------------------------------------------------------------------------------------------

def test_cdat_tfn_has_logit_dropout():
    "CDaT's TFN ends with Dropout(0.1) on the logits like CDaT's other baselines; MMSA's configurations do not"
    dims = {'text': 6, 'audio': 3, 'vision': 4}
    nodrop = dict(dropout={m: 0. for m in MODALITIES}, post_fusion_dropout=0.)
    torch.manual_seed(0)
    batch = {m: torch.randn(8, 5, d) for m, d in dims.items()}
    cdat = TFN(dims, 100, **SMALL_TFN, **nodrop).train()
    with torch.no_grad(): logits = cdat(batch).logits
    zeroed = (logits == 0).float().mean().item()
    assert 0.05 < zeroed < 0.15, zeroed
    mmsa = TFN(dims, 100, config='mmsa_mosi', **SMALL_TFN, **nodrop).train()
    with torch.no_grad(): assert (mmsa(batch).logits != 0).all()
    assert TFN(dims, 1, logit_dropout=0.).logit_dropout.p == 0.


def _record_attention_calls(model):
    "Wrap every MultiheadAttention of `model`: record need_weights and whether a key padding mask was passed"
    seen = []
    for mod in model.modules():
        if isinstance(mod, nn.MultiheadAttention):
            orig = mod.forward
            def fwd(*args, _orig=orig, **kw):
                seen.append((kw.get('need_weights', True), kw.get('key_padding_mask') is not None))
                return _orig(*args, **kw)
            mod.forward = fwd
    return seen


def test_tailor_asks_for_attention_weights_only_when_asked(datasets):
    model, batch = build('tailor', 'mosei_full', datasets)
    seen = _record_attention_calls(model)
    with torch.no_grad(): model(batch)
    assert seen and not any(w for w, _ in seen), seen       # every attention call can use the fused kernels
    with torch.no_grad(): att = model.label_attention(batch)
    S = 4 * batch['text'].shape[1]                           # [text | audio | vision | common]
    assert att.shape == (B, 6, S) and torch.allclose(att.sum(-1), torch.ones(B, 6), atol=1e-5)


def test_no_key_padding_mask_without_padding(datasets):
    "A batch with no padding passes no (all-False) key padding mask to any attention layer"
    model, batch = build('tailor', 'mosei_full', datasets)
    assert all(batch[f'{m}_mask'].all() for m in MODALITIES)
    seen = _record_attention_calls(model)
    model(batch)   # with gradients on, so the encoder layers call their attention modules (no inference fast path)
    assert len(seen) == 3 + 3 * 1 + 2 and not any(k for _, k in seen), seen   # unimodal, cross encoders, decoder
    padded_model, padded = build('tailor', 'mosi_padded', datasets)
    seen = _record_attention_calls(padded_model)
    padded_model(padded)
    assert any(k for _, k in seen)                            # padding still masked when there is some
