"""Loading: hyperparameters and metadata come from the file, through the engine's own parser."""
from __future__ import annotations

import numpy as np
import pytest

from radixserve.engine import Model


@pytest.mark.bundled
def test_bundled_hyperparameters(bundled_model):
    hp = bundled_model.hparams
    assert (hp.n_vocab, hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_ff) == \
        (49152, 576, 30, 9, 3, 64, 1536)
    assert hp.rope_freq_base == 100000.0 and hp.tied_output and hp.n_ctx_train == 8192
    assert bundled_model.n_layer == 30  # hyperparameters are attributes too
    assert bundled_model.kv_store(n_pages=1).bytes_per_token == 23040  # f16 KV, as anchors.md says


@pytest.mark.bundled
def test_metadata_equals_gguf_package(bundled_model, bundled_model_path):
    import gguf

    r = gguf.GGUFReader(bundled_model_path)
    md = bundled_model.metadata
    assert md["tokenizer.ggml.tokens"] == [str(bytes(r.fields["tokenizer.ggml.tokens"].parts[i]), "utf-8")
                                           for i in r.fields["tokenizer.ggml.tokens"].data]
    assert md["tokenizer.ggml.merges"][:3] == r.fields["tokenizer.ggml.merges"].contents()[:3]
    assert np.array_equal(md["tokenizer.ggml.token_type"], r.fields["tokenizer.ggml.token_type"].contents())
    assert md["tokenizer.chat_template"] == r.fields["tokenizer.chat_template"].contents()
    assert md["tokenizer.ggml.add_bos_token"] is False
    assert md["general.architecture"] == "llama"
    assert len(md) == len([k for k in r.fields if not k.startswith("GGUF.")])  # the reader lists 3 header fields too


@pytest.mark.bundled
def test_load_maps_weights_without_reading_them(bundled_model_path):
    """Weights are mapped, not copied: opening touches almost none of the file's pages
    (the load time itself is measured by scripts/bench_engine.py, not asserted here)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    m = Model(bundled_model_path)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert m.weight_bytes > 90_000_000
    assert grown_kib < 20_000, f"opening the model grew peak RSS by {grown_kib} KiB"
