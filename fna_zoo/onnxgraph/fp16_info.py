"""What an fp16 conversion did (`Fp16Info`), and the default scopes it converts."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ['DEFAULT_FP16_SCOPES', 'Fp16Info']

# module scopes of the network in fna_zoo.export's modules (BackboneExport.body, *DetectorExport.core)
DEFAULT_FP16_SCOPES: tuple[str, ...] = ('/body/', '/core/')


@dataclass
class Fp16Info:
    """What `convert_fp16` did.

    Args:
        fp16_nodes: Nodes that run in fp16.
        fp32_nodes: Nodes kept in float32 (constants not counted).
        casts: Cast nodes inserted at fp16 / fp32 boundaries.
        fp16_constants: Weights and constants stored in fp16.
        fp32_constants: Float weights and constants kept in float32 (read by fp32 nodes only).
        clipped: Values beyond +-65504 clipped to the fp16 range.
        flushed: Non-zero values that became 0 in fp16 (below fp16's smallest subnormal, ~6e-8).
        scopes: The fp16 scopes (None: every node).
        fp32_scopes: Top-level scopes of the nodes kept in float32 (e.g. `/normalize/`, `/postprocess/`).
    """

    fp16_nodes: int = 0
    fp32_nodes: int = 0
    casts: int = 0
    fp16_constants: int = 0
    fp32_constants: int = 0
    clipped: int = 0
    flushed: int = 0
    scopes: tuple[str, ...] | None = DEFAULT_FP16_SCOPES
    fp32_scopes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a log or a printout."""
        kept = ', '.join(self.fp32_scopes) or 'none'
        return (f'{self.fp16_nodes} nodes fp16, {self.fp32_nodes} kept fp32 ({kept}), {self.casts} casts, '
                f'{self.fp16_constants} weights/constants fp16, {self.clipped} values clipped to +-65504, '
                f'{self.flushed} flushed to 0')

    def metadata(self) -> str:
        """The `fp16` entry of the converted file's metadata."""
        return (f'mixed precision: network nodes under {", ".join(self.scopes) if self.scopes else "every scope"} '
                f'in fp16; kept float32: {", ".join(self.fp32_scopes) or "none"}; io float32')
