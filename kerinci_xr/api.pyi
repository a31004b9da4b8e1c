"""Signatures of the generated stage functions (written by ``python -m kerinci_xr.api``)."""

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

PathLike = str | os.PathLike[str]

__all__ = ['assess', 'change', 'crossval', 'design_sample', 'evaluate', 'export', 'info', 'map', 'predict', 'prepare', 'quicklook', 'report', 'sample', 'suggest', 'synth', 'train']

def synth(out: PathLike, *, height: int = ..., width: int = ..., seed: int = ..., radar: bool = ..., years: tuple[int, ...] | None = ..., points: int = ..., qa_pixel: bool = ..., stac: bool = ..., overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """Write a Kerinci-like scene (Landsat, PALSAR, labels, lc.json)."""

def prepare(image: PathLike | Sequence[PathLike] | None = ..., *, workers: int | None = ..., scheduler: str | None = ..., stac: PathLike | None = ..., assets: tuple[str, ...] | None = ..., bbox: tuple[float, ...] | None = ..., datetime: str | None = ..., radar_stac: PathLike | None = ..., dates: tuple[str, ...] | None = ..., labels: PathLike | Sequence[PathLike] | None = ..., label_field: str = ..., labels_date: str | None = ..., legend: PathLike | None = ..., radar: PathLike | Sequence[PathLike] | None = ..., bands: tuple[str, ...] | None = ..., select: tuple[str, ...] | None = ..., band_roles: tuple[str, ...] | None = ..., radar_bands: tuple[str, ...] = ..., mask: PathLike | Sequence[PathLike] | None = ..., mask_band: str | None = ..., mask_kind: Literal['fmask', 'qa_pixel', 'values'] = ..., mask_values: tuple[int, ...] = ..., scale: float | None = ..., offset: float | None = ..., nodata: float | None = ..., radar_scale: float = ..., chunk: int = ..., sensor: Literal['auto', 'landsat8', 'landsat7', 'sentinel2'] = ..., align_labels: bool = ..., strict: bool = ..., zarr_format: Literal[2, 3] = ..., out: PathLike, overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """Build the analysis-ready Zarr cube from imagery, labels and radar."""

def info(cube: PathLike, *, workers: int | None = ..., scheduler: str | None = ..., json: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """Grid, bands, class pixel counts and hectares of a cube."""

def quicklook(cube: PathLike, *, out: PathLike, band_roles: tuple[str, ...] | None = ..., max_size: int = ..., percentiles: tuple[float, ...] = ..., overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """False-colour and class-map PNGs of a cube."""

def sample(cube: PathLike, *, per_class: int = ..., patch: int = ..., max_nodata: float = ..., block: int | None = ..., buffer: int = ..., date: str | None = ..., temporal: Literal['date', 'stack'] = ..., workers: int | None = ..., scheduler: str | None = ..., seed: int = ..., fractions: tuple[float, ...] = ..., split_by: Literal['auto', 'labels', 'area'] = ..., out: PathLike, manifest: PathLike | None = ..., overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """Draw N patches per class in spatial splits into a Zarr patch store."""

def train(patches: PathLike, *, indices: tuple[str, ...] = ..., windows: tuple[int, ...] = ..., rounds: int = ..., max_pixels: int = ..., preset: Literal['wall-to-wall', 'sparse'] = ..., epochs: int = ..., batch_size: int = ..., lr: float | None = ..., weight_decay: float = ..., class_weights: Literal['none', 'inverse', 'inverse_sqrt'] | None = ..., dice: float = ..., patience: int | None = ..., select: Literal['best', 'last'] = ..., seed: int = ..., device: str = ..., amp: bool = ..., loader_workers: int = ..., augment: bool = ..., depth: int | None = ..., base: int | None = ..., sync_bn: bool = ..., dist_timeout: float = ..., calibrate: bool = ..., norm: Literal['batch', 'group', 'instance', 'none'] = ..., dropout: float = ..., out: PathLike, model: Literal['unet', 'lightgbm', 'rf'] = ..., resume: bool = ..., until_epoch: int | None = ..., overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """Train the U-Net (validation each epoch) or a per-pixel model on a patch store's sample."""

def crossval(cube: PathLike, *, indices: tuple[str, ...] = ..., windows: tuple[int, ...] = ..., rounds: int = ..., max_pixels: int = ..., per_class: int = ..., patch: int | None = ..., max_nodata: float = ..., block: int | None = ..., buffer: int = ..., date: str | None = ..., temporal: Literal['date', 'stack'] = ..., preset: Literal['wall-to-wall', 'sparse'] = ..., epochs: int = ..., batch_size: int = ..., lr: float | None = ..., weight_decay: float = ..., class_weights: Literal['none', 'inverse', 'inverse_sqrt'] | None = ..., dice: float = ..., patience: int | None = ..., select: Literal['best', 'last'] = ..., seed: int = ..., device: str = ..., amp: bool = ..., loader_workers: int = ..., augment: bool = ..., depth: int | None = ..., base: int | None = ..., sync_bn: bool = ..., dist_timeout: float = ..., calibrate: bool = ..., norm: Literal['batch', 'group', 'instance', 'none'] = ..., dropout: float = ..., folds: int = ..., models: tuple[str, ...] = ..., group_by: Literal['block', 'feature'] = ..., min_test_samples: int = ..., keep_flagged: bool = ..., out: PathLike, overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """Spatial k-fold cross-validation of the U-Net and per-pixel models on identical folds."""

def evaluate(source: PathLike, *, workers: int | None = ..., scheduler: str | None = ..., model: PathLike | None = ..., cube: PathLike | None = ..., reference: PathLike | None = ..., label_field: str = ..., polygon_rule: Literal['majority', 'pixels'] = ..., patches: PathLike | None = ..., split: Literal['train', 'val', 'test'] = ..., device: str = ..., out: PathLike, overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """Accuracy of a model on a patch store split, or of a map against the cube or a reference file."""

def predict(cube: PathLike, *, workers: int | None = ..., scheduler: str | None = ..., model: PathLike, patches: PathLike | None = ..., out: PathLike, cog: PathLike | None = ..., uncertainty_cog: PathLike | None = ..., areas: PathLike | None = ..., metrics: PathLike | None = ..., zarr_format: Literal[2, 3] = ..., cog_values: Literal['ids', 'codes'] = ..., chunk: int = ..., tile: int | None = ..., device: str = ..., probabilities: bool = ..., date: str | None = ..., all_dates: bool = ..., overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """Predict a whole cube: prediction.zarr, COG, class areas, metrics."""

def change(map_a: PathLike, map_b: PathLike | None = ..., *, workers: int | None = ..., scheduler: str | None = ..., from_date: str | None = ..., to_date: str | None = ..., min_confidence: float | None = ..., out: PathLike, cog: PathLike | None = ..., transitions: PathLike | None = ..., summary: PathLike | None = ..., overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """From-to map, transition matrix and gross/net change between two class maps."""

def design_sample(map: PathLike, *, workers: int | None = ..., scheduler: str | None = ..., n: int = ..., min_per_class: int = ..., allocation: Literal['proportional', 'equal', 'neyman'] = ..., expected_ua: tuple[str, ...] | None = ..., target_se: float | None = ..., strata: Literal['map', 'uncertainty'] = ..., uncertain_share: float = ..., seed: int = ..., out: PathLike, overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """A stratified random sample of a map's pixels, for accuracy and area estimation."""

def assess(map: PathLike, *, workers: int | None = ..., scheduler: str | None = ..., reference: PathLike, label_field: str = ..., truth: PathLike | None = ..., out: PathLike, csv: PathLike | None = ..., overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """Accuracy and error-adjusted areas with 95 % CIs from a labelled sample (Olofsson et al. 2014; Stehman 2014 when its strata are not the map's classes)."""

def suggest(map: PathLike, *, workers: int | None = ..., scheduler: str | None = ..., n: int = ..., by: Literal['entropy', 'margin', 'random'] = ..., min_distance: float = ..., labels: PathLike | Sequence[PathLike] | None = ..., cube: PathLike | None = ..., date: str | None = ..., seed: int = ..., out: PathLike, overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """The next points to label (active learning): most uncertain, spread over map classes and apart."""

def map(cube: PathLike, *, prediction: PathLike | None = ..., patches: PathLike | None = ..., band_roles: tuple[str, ...] | None = ..., max_size: int = ..., out: PathLike, png: PathLike | None = ..., overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """Interactive linked maps of a cube (and prediction) as standalone HTML."""

def report(run_dir: str | None = ..., *, cube: PathLike | None = ..., prediction: PathLike | None = ..., patches: PathLike | None = ..., metrics: PathLike | None = ..., scene_metrics: PathLike | None = ..., areas: PathLike | None = ..., history: PathLike | None = ..., change: PathLike | None = ..., change_summary: PathLike | None = ..., assessment: PathLike | None = ..., crossval: PathLike | None = ..., suggestions: PathLike | None = ..., learning_curves: PathLike | None = ..., max_size: int = ..., out: PathLike, overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """One HTML page for a run: maps, accuracy, areas, training."""

def export(cube: PathLike, *, workers: int | None = ..., scheduler: str | None = ..., bands: tuple[str, ...] | None = ..., date: str | None = ..., out: PathLike, overwrite: bool = ..., progress: bool = ..., echo: Callable[[str], Any] | None = ...) -> dict[str, Any]:
    """Write a cube's imagery as a Cloud-Optimised GeoTIFF with its band names."""
