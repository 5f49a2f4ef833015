"""Your own clips (chapter 26): `cdat extract` on a folder the project has never seen, `cdat train --data` on the result,
`cdat predict` on a new clip; the cache, the limits, hostile files, word steps and replaced extractors.
The clips are made here, offline: a tone-based voice, frames from scikit-image's bundled photograph, encoded with PyAV."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from cdatlib import extract as X
from cdatlib.cli import main
from cdatlib.config import ConfigError, TrainConfig

EXTRA_REASON = 'the extract extra is not installed (pip install -e ".[extract]"): PyAV, openSMILE and scikit-image read the clips'
MODS = ('text', 'audio', 'vision')

def need_extra():
    for m in ('av', 'opensmile', 'skimage'): pytest.importorskip(m, reason=EXTRA_REASON)

def cdat(*args, cwd):
    "The `cdat` command in a new process, as a user runs it"
    exe = Path(sys.executable).with_name('cdat')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from cdatlib.cli import main; sys.exit(main())']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=cwd, timeout=600, env=env)

def one_error(r):
    "The stderr of a refused command: exactly one `cdat: error:` line (warnings aside), no traceback"
    lines = [l for l in r.stderr.strip().splitlines() if not l.startswith('cdat: warning:')]
    assert r.returncode == 2 and 'Traceback' not in r.stderr and len(lines) == 1 and lines[0].startswith('cdat: error:'), r.stderr
    return lines[0]

@pytest.fixture(scope='module')
def clips(tmp_path_factory):
    "A folder unlike chapter 26's: another seed, frame size, rate and length, and more kinds of bad file"
    need_extra()
    root = tmp_path_factory.mktemp('own')
    csv = X.synthetic_clips(root/'clips', n_good=6, seconds=1.5, fps=8, size=72, seed=7)
    (root/'clips'/'empty.mp4').write_bytes(b'')
    (root/'clips'/'playlist.mp4').write_text('#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n')
    (root/'clips'/'notes.mkv').write_text('not a video')
    rows = pd.read_csv(csv)
    extra = pd.DataFrame([(n, 'the ending was dull', -0.6, 'train') for n in ('empty.mp4', 'playlist.mp4', 'notes.mkv', 'absent.mp4')],
                         columns=rows.columns)
    pd.concat([rows, extra]).to_csv(csv, index=False)
    X.write_clip(root/'new.mp4', X.face_frames(12, 72, np.random.default_rng(3)), X.tone_speech(2.2, 1.5, rng=np.random.default_rng(3)), fps=8)
    return root

BAD = {'broken.mp4': 'not a media file read here', 'truncated.mp4': 'cannot be decoded', 'empty.mp4': 'not a media file read here',
       'playlist.mp4': 'not a media file read here', 'notes.mkv': 'not a media file read here', 'absent.mp4': 'no such file'}

def test_extract_train_predict_from_the_shell(clips):
    "The issue's acceptance: never-seen clips through `cdat extract`, `cdat train --data` and `cdat predict`, fresh processes"
    r = cdat('extract', 'clips', '--labels', 'clips/labels.csv', '--out', 'own.pkl', '--quiet', cwd=clips)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert 'extracted 9 of 15 clips into own.pkl (train/valid/test 5/2/2; 0 from the cache)' in out, out
    for name, reason in BAD.items(): assert any(l.split()[:1] == [name] and reason in l for l in out.splitlines()), (name, out)
    for name, reason in {'voice_only.wav': 'vision: no video track', 'silent_film.mp4': 'audio: no audio track',
                         'no_face.mp4': 'vision: no face in any'}.items():
        assert any(l.split()[:1] == [name] and reason in l for l in out.splitlines()), (name, out)
    assert 'next: cdat train --data own.pkl' in out and 'problem:' not in out
    d = cdat('data', 'describe', 'own.pkl', cwd=clips)
    assert d.returncode == 0 and 'layout: mmsa' in d.stdout and 'train:      5 samples' in d.stdout, d.stderr
    t = cdat('train', '--data', 'own.pkl', '--epochs', '2', '--out-dir', 'runs', '--quiet', cwd=clips)
    assert t.returncode == 0, t.stderr
    assert 'valid_mae' in t.stdout
    p = cdat('predict', 'runs/naive-own/seed-0', 'new.mp4', 'clips/voice_only.wav', 'clips/broken.mp4',
             '--text', 'the film was brilliant', '--text', 'it was dull', '--text', '', cwd=clips)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ['clip', 'pred', 'notes']
    assert lines[1].split()[0] == 'new.mp4' and np.isfinite(float(lines[1].split()[1]))
    assert 'vision masked: no video track' in lines[2] and lines[3].startswith('skipped clips/broken.mp4: not a media file')

def test_cdat_run_predictions_have_confidences_and_masked_predictions(clips, monkeypatch):
    if not (clips/'own.pkl').exists(): X.extract(clips/'clips', clips/'clips'/'labels.csv', clips/'own.pkl', progress=False)
    monkeypatch.chdir(clips)
    assert main(['train', '--data', 'own.pkl', '--epochs', '2', '--method', 'cdat', '--out-dir', 'runs', '--quiet']) == 0
    r = cdat('predict', 'runs/naive+cdat_ce-own/seed-0', 'new.mp4', '--text', 'the film was brilliant', '--json', cwd=clips)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    row = j['predictions'][0]
    assert set(row) == {'clip', 'pred_baseline', 'pred_cdat', 'notes'} | {f'{k}_{m}' for m in MODS for k in ('conf', 'without')}
    assert all(0 <= row[f'conf_{m}'] <= 1 for m in MODS) and j['skipped'] == {}

def test_a_killed_run_continues_from_the_cache_and_a_changed_clip_is_extracted_again(clips, monkeypatch, capsys):
    out, real, calls = clips/'resume.pkl', X.extract_clip, []
    def dies_at_the_fourth(*a, **k):
        calls.append(a[0])
        if len(calls) == 4: raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(X, 'extract_clip', dies_at_the_fourth)
    args = ['extract', str(clips/'clips'), '--labels', str(clips/'clips'/'labels.csv'), '--out', str(out), '--quiet']
    assert main(args) == 130
    assert 'the clips done so far come from the cache' in capsys.readouterr().err
    assert not out.exists() and len(list((clips/'resume.pkl.cache').glob('*.npz'))) == 3
    assert not list((clips/'resume.pkl.cache').glob('.*.tmp'))   # atomic writes: nothing half written
    monkeypatch.setattr(X, 'extract_clip', real)
    rep = X.extract(clips/'clips', clips/'clips'/'labels.csv', out, progress=False)
    assert rep.cached == 3
    X.write_clip(clips/'clips'/'clip01.mp4', X.face_frames(12, 72), X.tone_speech(-2.0, 1.5), fps=8)
    rep = X.extract(clips/'clips', clips/'clips'/'labels.csv', out, progress=False, overwrite=True)
    assert rep.cached == 15 - 1 - 1   # all but the changed clip and the absent one (nothing to hash, nothing cached)
    with pytest.raises(ConfigError, match='exists; add --overwrite'): X.extract(clips/'clips', clips/'clips'/'labels.csv', out)

def test_limits_skip_a_clip_and_name_the_limit(clips):
    rep = X.extract(clips/'clips', clips/'clips'/'labels.csv', clips/'small.pkl', limits=X.MediaLimits(max_side=64), progress=False)
    assert rep.skipped['clip00.mp4'] == 'frames of 72x72, more than the limit of 64 px a side'
    assert 'voice_only.wav' not in rep.skipped                                  # audio alone has no frame to refuse
    ex = X.Extractors(X.ExtractSettings())
    with pytest.raises(X.ClipError, match='lasts 1.6 s, more than the limit of 1 s'):
        X.extract_clip(clips/'clips'/'clip00.mp4', '', ex.settings, ex, X.MediaLimits(max_duration=1.))
    with pytest.raises(X.ClipError, match='more than the limit of 5 frames'):
        X.extract_clip(clips/'clips'/'clip02.mp4', '', ex.settings, ex, X.MediaLimits(max_frames=5))

def test_hostile_paths_are_named_not_opened(clips, tmp_path):
    need_extra()
    os.mkfifo(tmp_path/'fifo.mp4')   # opening it would wait for a writer forever
    os.symlink('/dev/zero', tmp_path/'zero.mp4'); os.symlink(tmp_path/'loop.mp4', tmp_path/'loop.mp4')
    ex = X.Extractors(X.ExtractSettings())
    for name, reason in [('fifo.mp4', 'not a regular file (a FIFO)'), ('zero.mp4', 'not a regular file (a device)'), ('loop.mp4', 'symlink loop')]:
        with pytest.raises(X.ClipError, match=reason.replace('(', r'\(').replace(')', r'\)')): X.extract_clip(tmp_path/name, '', ex.settings, ex)

def test_labels_mistakes_are_one_line_naming_the_line(tmp_path):
    for body, needle in [('clip,text,label\n/etc/passwd,a,1\n', "line 2: clip '/etc/passwd': give a file name inside the clips folder"),
                         ('clip,text,label\nsub/../../x.mp4,a,1\n', "give a file name inside the clips folder"),
                         ('clip,text,label\na.mp4,a,\n', "label '' is not a number"),
                         ('clip,text,label\na.mp4,a,nan\n', 'outside [-3, 3]'),
                         ('clip;text;label\na.mp4;a;1\n', 'no column clip, text, label')]:
        (tmp_path/'l.csv').write_text(body)
        with pytest.raises(ConfigError, match=None) as e: X.read_labels(tmp_path/'l.csv')
        assert needle in str(e.value) and str(tmp_path/'l.csv') in str(e.value), str(e.value)

def test_without_the_extra_the_commands_say_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(X, 'find_spec', lambda name: None)
    for args in (['extract', str(tmp_path), '--labels', 'l.csv', '--out', 'x.pkl'], ['predict', str(tmp_path), 'a.mp4']):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and 'pip install -e ".[extract]"' in err[0], err

def test_the_parser_imports_neither_torch_nor_the_extractors():
    r = subprocess.run([sys.executable, '-c', 'import sys; from cdatlib.cli import make_parser; make_parser(); '
                        'print(sorted(m for m in sys.modules if m.startswith(("cdatlib", "torch", "av", "opensmile"))))'],
                       capture_output=True, text=True)
    assert eval(r.stdout) == ['cdatlib', 'cdatlib.cli', 'cdatlib.config'], r.stderr

def test_word_steps_and_the_skip_policy(clips, tmp_path):
    folder = tmp_path/'words'
    csv = X.synthetic_clips(folder, n_good=6, seconds=1., fps=5, size=64, seed=11)
    for c in ['clip00', 'clip01', 'clip02', 'clip04', 'clip05', 'voice_only', 'silent_film', 'no_face']:
        (folder/f'{c}.words.csv').write_text('word,start,end\nit,0.0,0.2\nwas,0.2,0.4\nreally,0.45,0.7\ngood,0.7,0.95\n')
    rep = X.extract(folder, csv, tmp_path/'w.pkl', X.ExtractSettings(align='words', missing='skip'), progress=False)
    assert rep.skipped['clip03.mp4'].startswith('no word timings: write clip03.words.csv')
    assert rep.skipped['silent_film.mp4'] == 'audio: no audio track (--missing skip)' and rep.masked == {}
    assert rep.splits == {'train': 2, 'valid': 2, 'test': 1}
    data = X.load_dataset(tmp_path/'w.pkl')
    assert {m: data.train.seq_lens[m] for m in MODS} == {'text': 4, 'audio': 4, 'vision': 4}   # one step per word, everywhere

def test_extractors_replaced_by_local_hugging_face_folders(clips, tmp_path):
    need_extra()
    from transformers import Wav2Vec2Config, Wav2Vec2Model, Wav2Vec2FeatureExtractor, ViTConfig, ViTModel, ViTImageProcessor
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
                                 conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                                 num_conv_pos_embedding_groups=2)).save_pretrained(tmp_path/'audio')
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(tmp_path/'audio')
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=12, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=24)).save_pretrained(tmp_path/'vision')
    ViTImageProcessor(size={'height': 32, 'width': 32}).save_pretrained(tmp_path/'vision')
    s = X.ExtractSettings(audio_model=str(tmp_path/'audio'), vision_model=str(tmp_path/'vision'))
    rep = X.extract(clips/'clips', clips/'clips'/'labels.csv', tmp_path/'hf.pkl', s, progress=False)
    assert rep.problems == []
    data = X.load_dataset(tmp_path/'hf.pkl')
    assert data.dims == {'text': 384, 'audio': 16, 'vision': 4 + 12}
    assert data.report['config']['extractors']['audio'].startswith('audio:')

def test_predict_refuses_a_run_not_trained_on_extracted_clips(clips, tmp_path):
    from cdatlib.run import train
    res = train(TrainConfig(epochs=1, out_dir=str(tmp_path)), progress=False, log=lambda *a: None, warn=lambda *a: None)
    with pytest.raises(ConfigError, match='not made by cdat extract'): X.predict_clips(res.seed_dir(0), [clips/'new.mp4'])
