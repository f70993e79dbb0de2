"""Named network variants, as data.

``ldfusion`` is the paper's network (content + style encoders, AdaIN decoder); its layout
matches the authors' ``Enc_final.pt`` / ``Dec_final.pt``. ``ld-lite`` is the authors'
50%-channel-pruned, distilled student (no style path), matching LD-Lite's ``final.pt``.
``fast`` is this project's CPU student of LD-Lite: LD-Lite's layout at half its width in
every layer, with a 3x3 output conv (3.3 GFLOP per 640x512 frame against LD-Lite's 12.6).
It keeps LD-Lite's 5x5 transposed convs, so each of its layers sits on the teacher's grid
and can start from, and be hinted by, half of the teacher's channels.

``encoder_widths`` / ``decoder_widths`` give each resolution its own width, for students
that keep the teacher's channels where the code both modalities hand the decoder lives (1/8)
and save near full resolution, where a CPU spends its time (MODEL_CARD.md, the fast card).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields

from ldfusion.errors import ConfigError

# Sane ranges of the integer fields, checked before anything is allocated: a checkpoint
# declares its own layout, and a crafted one (content_dim 4096) would otherwise make the
# loader allocate gigabytes. Generous: the published networks sit far inside.
MAX_WIDTH = 256  # of any one level in encoder_widths / decoder_widths
FIELD_RANGES: dict[str, tuple[int, int]] = {
    "content_dim": (1, 128),
    "n_downsample": (2, 5),
    "n_residual": (0, 16),
    "style_dim": (0, 256),
    "style_base_dim": (1, 128),
    "n_adain_residual": (0, 16),
    "mlp_dim": (1, 2048),
    "mlp_blocks": (1, 8),
}


def _is_width(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WIDTH


@dataclass(frozen=True)
class VariantSpec:
    name: str
    content_dim: int  # channels after the first 7x7 conv of each content encoder
    n_downsample: int  # stride-2 convs in the encoders (and transposed convs in the decoder)
    n_residual: int  # residual blocks at the end of each content encoder
    style_dim: int = 0  # style code length per modality; 0 = no style path
    style_base_dim: int = 16  # channels after the first conv of each style encoder
    n_adain_residual: int = 0  # AdaIN residual blocks at the start of the decoder
    mlp_dim: int = 256
    mlp_blocks: int = 3
    output_activation: str = "sigmoid"  # "sigmoid" or "tanh"; clamped to [0, 1] after
    out_kernel: int = 7  # the final conv to one channel, reflect-padded to keep the size
    # Per-level widths, when they do not follow content_dim's doubling: the content encoders'
    # channels at full resolution, 1/2, ... 1/2**n_downsample (the last is the code each
    # modality hands the decoder), and the decoder's after each transposed conv, from the
    # coarsest to full resolution. Empty: content_dim * 2**level, and halving back down.
    encoder_widths: tuple[int, ...] = ()
    decoder_widths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"variant name must be a non-empty string; got {self.name!r}")
        for name, (low, high) in FIELD_RANGES.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"variant {self.name}: {name} must be an integer in {low}..{high}; got {value!r}")
        if self.output_activation not in ("sigmoid", "tanh"):
            raise ConfigError(f"variant {self.name}: output_activation must be sigmoid or tanh")
        if self.n_downsample < 2:
            raise ConfigError(f"variant {self.name}: n_downsample must be at least 2")
        if self.n_adain_residual and not self.style_dim:
            raise ConfigError(f"variant {self.name}: AdaIN blocks need a style path (style_dim > 0)")
        if self.out_kernel < 1 or self.out_kernel % 2 == 0:
            raise ConfigError(f"variant {self.name}: out_kernel must be odd and positive; got {self.out_kernel}")
        for name, count in (("encoder_widths", self.n_downsample + 1), ("decoder_widths", self.n_downsample)):
            widths = getattr(self, name)
            if not isinstance(widths, (tuple, list)):
                raise ConfigError(f"variant {self.name}: {name} must be a list of integers; got {widths!r}")
            widths = tuple(widths)
            object.__setattr__(self, name, widths)  # a checkpoint or YAML gives a list
            if widths and (len(widths) != count or not all(_is_width(w) for w in widths)):
                raise ConfigError(f"variant {self.name}: {name} must be {count} integers in 1..{MAX_WIDTH}; got {list(widths)}")

    @property
    def content_widths(self) -> tuple[int, ...]:
        """A content encoder's channels at each level, full resolution first."""
        return self.encoder_widths or tuple(self.content_dim * 2**level for level in range(self.n_downsample + 1))

    @property
    def up_widths(self) -> tuple[int, ...]:
        """The decoder's channels after each transposed conv, coarsest first."""
        return self.decoder_widths or tuple(self.decoder_dim // 2**level for level in range(1, self.n_downsample + 1))

    @property
    def content_channels(self) -> int:
        """Channels of one modality's content code."""
        return self.content_widths[-1]

    @property
    def decoder_dim(self) -> int:
        """Channels entering the decoder: the two content codes concatenated."""
        return 2 * self.content_channels

    @property
    def has_style(self) -> bool:
        return self.style_dim > 0

    def to_dict(self) -> dict:
        return asdict(self)


VARIANTS: dict[str, VariantSpec] = {
    "ldfusion": VariantSpec(
        name="ldfusion",
        content_dim=16,
        n_downsample=3,
        n_residual=2,
        style_dim=8,
        style_base_dim=16,
        n_adain_residual=2,
        mlp_dim=256,
        mlp_blocks=3,
        output_activation="tanh",
    ),
    "ld-lite": VariantSpec(
        name="ld-lite",
        content_dim=8,
        n_downsample=3,
        n_residual=2,
        output_activation="sigmoid",
    ),
    "fast": VariantSpec(
        name="fast",
        content_dim=4,
        n_downsample=3,
        n_residual=2,
        output_activation="sigmoid",
        out_kernel=3,
    ),
    # A CPU student layout with LD-Lite's widths at 1/4 and 1/8 and fewer channels near full
    # resolution. No weights ship for it: distilled, it flattened at 30.0 dB against LD-Lite
    # (215 steps; MODEL_CARD.md, the fast card), below the bar; kept so that run can be repeated.
    "fast-wide-code": VariantSpec(
        name="fast-wide-code",
        content_dim=8,
        n_downsample=3,
        n_residual=2,
        output_activation="sigmoid",
        encoder_widths=(4, 16, 32, 64),
        decoder_widths=(64, 16, 4),
    ),
}


def get_variant(name: str) -> VariantSpec:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(f"unknown model variant {name!r}; choose one of {sorted(VARIANTS)}") from None


def variant_from_dict(fields: dict) -> VariantSpec:
    """Rebuild a spec stored in a checkpoint (so a renamed variant still loads); every field is checked."""
    if not isinstance(fields, dict):
        raise ConfigError(f"malformed variant description: a {type(fields).__name__}, not a mapping")
    known = {f.name for f in dataclass_fields(VariantSpec)}
    unknown = sorted(str(key) for key in set(fields) - known)
    if unknown:
        raise ConfigError(f"malformed variant description: unknown field(s) {', '.join(unknown)[:200]}")
    try:
        return VariantSpec(**fields)
    except TypeError as exc:
        raise ConfigError(f"malformed variant description: {exc}") from None
