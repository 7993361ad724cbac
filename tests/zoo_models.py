"""The architecture zoo: real models from transformers, and in-repo models that mirror the
torchvision / timm patterns that trip activation capture, each with planted dead neurons.

Every builder returns an eval-mode module whose `forward` takes plain tensors and returns
one tensor (a transformers model is wrapped so that TorchScript, torch.export and ONNX can
trace it), built from a tiny config with seeded random weights: nothing is downloaded.

Planting, known without relu-doctor:
* a Linear row of zeros with bias -1 (or no bias: the output is exactly 0) is never > 0;
* a LayerNorm / BatchNorm channel with weight 0 and bias -1 outputs the constant -1.
The reference (`reference_dead`) runs the eager model with forward hooks on the activation
modules and applies the definition of "dead" itself; it never uses relu-doctor's capture.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded: models come from configs

VOCAB = 64
SEQ = 8


@dataclass
class ZooCase:
    """One architecture: how to build it, its inputs, and where its dead neurons are planted."""

    name: str
    build: Callable[[], nn.Module]
    make_data: Callable[[int, int], list[np.ndarray]]  # (samples, seed) -> one array per input
    input_names: Sequence[str]
    # activation module path (in the built module) -> (neuron axis in its output, planted dead)
    planted: dict[str, tuple[int, tuple[int, ...]]]
    # a functional relu has no module to hook: the path of the module whose output it takes
    # -> (neuron axis, planted dead); the reference applies the relu itself
    functional: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    slow: bool = False
    script: bool = False  # TorchScript by torch.jit.script instead of trace
    # export ONNX through a forward(x) wrapper: the TorchScript-based exporter turns the
    # bare TransformerEncoderLayer's is_causal=False default into a tensor and fails
    onnx_wrapper: bool = False
    xfail: dict[str, str] = field(default_factory=dict)  # format -> reason (a pending capture fix)


# ---- planting ----------------------------------------------------------------------------


def plant_linear(linear: nn.Linear, dead: Sequence[int]) -> None:
    with torch.no_grad():
        linear.weight[list(dead)] = 0.0
        if linear.bias is not None:
            linear.bias[list(dead)] = -1.0


def plant_norm(norm: nn.Module, dead: Sequence[int]) -> None:
    """LayerNorm / BatchNorm channel -> the constant -1."""
    with torch.no_grad():
        norm.weight[list(dead)] = 0.0
        norm.bias[list(dead)] = -1.0


def _live_biases(module: nn.Module, low: float = 0.05, high: float = 0.2) -> None:
    """Small positive biases on every Linear / conv, so no unplanted neuron is dead by chance
    on a small sample (transformers initialises biases to 0: fires on ~half the inputs)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) and m.bias is not None:
                m.bias.uniform_(low, high)


# ---- transformers ------------------------------------------------------------------------


class HFWrapper(nn.Module):
    """A transformers model as `forward(*tensors) -> last_hidden_state`, traceable."""

    def __init__(self, model: nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.input_names[0]: x}).last_hidden_state


def _tokens(samples: int, seed: int) -> list[np.ndarray]:
    return [np.random.default_rng(seed).integers(0, VOCAB, size=(samples, SEQ)).astype(np.int64)]


def _hf(model: nn.Module, input_name: str, low: float = 0.05, high: float = 0.2) -> nn.Module:
    _live_biases(model, low, high)
    return HFWrapper(model, [input_name]).eval()


def build_opt() -> nn.Module:
    from transformers import OPTConfig, OPTModel

    torch.manual_seed(0)
    config = OPTConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
                       max_position_embeddings=32, word_embed_proj_dim=16, activation_function="relu",
                       pad_token_id=1, attn_implementation="eager")
    model = OPTModel(config).eval()
    wrapped = _hf(model, "input_ids")
    plant_linear(model.decoder.layers[0].fc1, OPT_DEAD[0])
    plant_linear(model.decoder.layers[1].fc1, OPT_DEAD[1])
    return wrapped


OPT_DEAD = ((1, 5, 30), (0, 17))


def build_t5() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                      dense_act_fn="relu", feed_forward_proj="relu", attn_implementation="eager")
    model = T5EncoderModel(config).eval()
    wrapped = _hf(model, "input_ids")
    plant_linear(model.encoder.block[0].layer[1].DenseReluDense.wi, T5_DEAD[0])  # no bias: output 0
    plant_linear(model.encoder.block[1].layer[1].DenseReluDense.wi, T5_DEAD[1])
    return wrapped


T5_DEAD = ((2, 9), (31,))


def build_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, hidden_act="relu", max_position_embeddings=32,
                        attn_implementation="eager")
    model = BertModel(config, add_pooling_layer=False).eval()
    wrapped = _hf(model, "input_ids")
    plant_linear(model.encoder.layer[0].intermediate.dense, BERT_DEAD[0])
    plant_linear(model.encoder.layer[1].intermediate.dense, BERT_DEAD[1])
    return wrapped


BERT_DEAD = ((4,), (3, 8, 21))

WHISPER_MELS, WHISPER_POSITIONS = 8, 16


def build_whisper() -> nn.Module:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=VOCAB, num_mel_bins=WHISPER_MELS, d_model=16, encoder_layers=2,
                           encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=1,
                           decoder_attention_heads=2, decoder_ffn_dim=32, activation_function="relu",
                           max_source_positions=WHISPER_POSITIONS, max_target_positions=16,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
                           attn_implementation="eager")
    model = WhisperEncoder(config).eval()
    # Larger biases: the fixed position embeddings push some rows below 0 on every input
    wrapped = _hf(model, "input_features", 0.5, 1.0)
    plant_linear(model.layers[0].fc1, WHISPER_DEAD[0])
    plant_linear(model.layers[1].fc1, WHISPER_DEAD[1])
    return wrapped


WHISPER_DEAD = ((7, 11), (0,))


def _mels(samples: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((samples, WHISPER_MELS, 2 * WHISPER_POSITIONS)).astype(np.float32)]


def build_wav2vec2() -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, hidden_act="relu", feat_extract_activation="relu",
                            feat_extract_norm="layer", conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                            conv_bias=True, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
                            do_stable_layer_norm=True, mask_time_prob=0.0, attn_implementation="eager")
    model = Wav2Vec2Model(config).eval()
    wrapped = _hf(model, "input_values")
    plant_norm(model.feature_extractor.conv_layers[0].layer_norm, WAV2VEC2_DEAD[0])
    plant_norm(model.feature_extractor.conv_layers[1].layer_norm, WAV2VEC2_DEAD[1])
    plant_linear(model.encoder.layers[0].feed_forward.intermediate_dense, WAV2VEC2_DEAD[2])
    return wrapped


WAV2VEC2_DEAD = ((3,), (0, 15), (6, 19))


def _audio(samples: int, seed: int) -> list[np.ndarray]:
    return [np.random.default_rng(seed).standard_normal((samples, 400)).astype(np.float32)]


# ---- in-repo models mirroring torchvision / timm patterns --------------------------------


class FlattenBySize(nn.Module):
    """conv-bn-relu, then `x.view(x.size(0), -1)` and a Linear-ReLU head (torchvision's
    AlexNet/VGG-style classifiers, and every traced model that reads the batch size)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8 * 3 * 3, 12)
        self.head_relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = F.adaptive_avg_pool2d(x, 3)
        x = x.view(x.size(0), -1)
        return self.head_relu(self.fc(x))


def build_flatten() -> nn.Module:
    torch.manual_seed(0)
    model = FlattenBySize()
    _live_biases(model, 0.3, 0.6)
    with torch.no_grad():
        model.bn.bias.uniform_(0.1, 0.3)
        model.fc.weight.mul_(0.3)  # the pooled features are all >= 0: keep the bias in charge
    plant_norm(model.bn, (2, 5))
    plant_linear(model.fc, (0, 7))
    return model.eval()


class EinsumLinear(nn.Module):
    """`relu(einsum("btd,fd->btf", x, W) + b)`: a linear map written as einsum (timm, MLP-Mixer)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(24, 16) * 0.3)
        self.bias = nn.Parameter(torch.empty(24).uniform_(0.05, 0.2))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(torch.einsum("btd,fd->btf", x, self.weight) + self.bias)


def build_einsum() -> nn.Module:
    torch.manual_seed(0)
    model = EinsumLinear()
    with torch.no_grad():
        model.weight[[1, 10, 23]] = 0.0
        model.bias[[1, 10, 23]] = -1.0
    return model.eval()


class ChannelsLast(nn.Module):
    """conv -> permute(0, 2, 3, 1) -> relu: the channels-last blocks of ConvNeXt-style models."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x).permute(0, 2, 3, 1))


def build_channels_last() -> nn.Module:
    torch.manual_seed(0)
    model = ChannelsLast()
    with torch.no_grad():
        model.conv.bias.uniform_(0.1, 0.3)
        model.conv.weight[[1, 6]] = 0.0
        model.conv.bias[[1, 6]] = -1.0
    return model.eval()


class EncoderLayer(nn.Module):
    """nn.TransformerEncoderLayer(activation="relu"): in eval it runs a fused kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation="relu", batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def build_encoder_layer() -> nn.Module:
    torch.manual_seed(0)
    model = EncoderLayer()
    _live_biases(model)
    plant_linear(model.layer.linear1, (2, 13, 30))
    return model.eval()


def build_bare_encoder_layer() -> nn.Module:
    """nn.TransformerEncoderLayer itself: scripted, its forward has optional mask arguments."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation="relu", batch_first=True)
    _live_biases(layer)
    plant_linear(layer.linear1, (5, 6, 31))
    return layer.eval()


class Positional(nn.Module):
    """forward(x) -> model(x), nothing else."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class OptionalMask(nn.Module):
    """A scripted module with an optional argument, as every scripted transformer block has."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 24)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        y = self.relu(self.fc(x))
        if mask is not None:
            y = y * mask
        return y


def build_optional_mask() -> nn.Module:
    torch.manual_seed(0)
    model = OptionalMask()
    _live_biases(model)
    plant_linear(model.fc, (0, 9, 23))
    return model.eval()


def _images(samples: int, seed: int) -> list[np.ndarray]:
    return [np.random.default_rng(seed).standard_normal((samples, 3, 6, 6)).astype(np.float32)]


def _tokens_16(samples: int, seed: int) -> list[np.ndarray]:
    return [np.random.default_rng(seed).standard_normal((samples, SEQ, 16)).astype(np.float32)]


def _features(samples: int, seed: int) -> list[np.ndarray]:
    return [np.random.default_rng(seed).standard_normal((samples, 16)).astype(np.float32)]


ZOO: list[ZooCase] = [
    ZooCase("flatten_by_size", build_flatten, _images, ["x"],
            {"relu": (1, (2, 5)), "head_relu": (1, (0, 7))}),
    ZooCase("optional_mask", build_optional_mask, _features, ["x"], {"relu": (1, (0, 9, 23))}, script=True),
    ZooCase("einsum_linear", build_einsum, _tokens_16, ["x"], {"relu": (2, (1, 10, 23))}),
    ZooCase("channels_last", build_channels_last, _images, ["x"], {"relu": (3, (1, 6))}),
    ZooCase("encoder_layer", build_encoder_layer, _tokens_16, ["x"], {},
            functional={"layer.linear1": (2, (2, 13, 30))}, slow=True),
    ZooCase("scripted_encoder_layer", build_bare_encoder_layer, _tokens_16, ["src"], {},
            functional={"linear1": (2, (5, 6, 31))}, script=True, onnx_wrapper=True),
    ZooCase("opt", build_opt, _tokens, ["input_ids"],
            {f"model.decoder.layers.{i}.activation_fn": (1, OPT_DEAD[i]) for i in range(2)},
            slow=True),
    ZooCase("bert", build_bert, _tokens, ["input_ids"],
            {f"model.encoder.layer.{i}.intermediate.intermediate_act_fn": (2, BERT_DEAD[i]) for i in range(2)},
            slow=True),
    ZooCase("t5", build_t5, _tokens, ["input_ids"],
            {f"model.encoder.block.{i}.layer.1.DenseReluDense.act": (2, T5_DEAD[i]) for i in range(2)},
            slow=True),
    ZooCase("whisper", build_whisper, _mels, ["input_features"],
            {f"model.layers.{i}.activation_fn": (2, WHISPER_DEAD[i]) for i in range(2)},
            slow=True),
    ZooCase("wav2vec2", build_wav2vec2, _audio, ["input_values"],
            {"model.feature_extractor.conv_layers.0.activation": (1, WAV2VEC2_DEAD[0]),
             "model.feature_extractor.conv_layers.1.activation": (1, WAV2VEC2_DEAD[1]),
             "model.encoder.pos_conv_embed.activation": (1, ()),
             "model.encoder.layers.0.feed_forward.intermediate_act_fn": (2, WAV2VEC2_DEAD[2])},
            slow=True),
]


# ---- the reference: forward hooks and the definition of dead, no relu-doctor -------------


def reference_dead(case: ZooCase, model: nn.Module, data: list[np.ndarray]) -> list[tuple[str, list[int]]]:
    """(site path, dead indices) of every hooked activation, in execution order."""
    fired: dict[str, torch.Tensor] = {}
    order: list[str] = []
    modules = dict(model.named_modules())
    handles = []

    def hook(path: str, axis: int, functional: bool) -> Any:
        def record(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            y = F.relu(out) if functional else out
            dims = [d for d in range(y.dim()) if d != axis]
            now = (y > 0).any(dim=dims) if dims else y > 0
            fired[path] = fired[path] | now if path in fired else now
            if path not in order:
                order.append(path)
        return record

    for path, (axis, _dead) in case.planted.items():
        handles.append(modules[path].register_forward_hook(hook(path, axis, False)))
    for path, (axis, _dead) in case.functional.items():
        handles.append(modules[path].register_forward_hook(hook(path, axis, True)))
    try:
        # Grad enabled with trainable weights: nn.TransformerEncoderLayer then takes its
        # plain (non-fused) path, whose Linear modules the hooks see.
        with torch.enable_grad():
            model(*[torch.from_numpy(a) for a in data])
    finally:
        for h in handles:
            h.remove()
    return [(p, [int(i) for i in torch.nonzero(~fired[p]).flatten()]) for p in order]
