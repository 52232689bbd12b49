"""``MeshLogger``: the predicted meshes of fixed validation objects beside their ground-truth voxels."""

from __future__ import annotations

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from recon.callbacks.run_folder import log_step, run_folder, wandb_loggers
from recon.callbacks.samples import ValidationSamplesCallback, sample_names, stamp
from recon.callbacks.voxels import voxel_centers, voxel_surface
from recon.mesh import save_mesh

MESH_COLOR = (0.62, 0.72, 0.90)  # light blue, as recon's prediction previews
VOXEL_COLOR = (0.75, 0.75, 0.75)  # gray
POINT_MESH_RGB = (40, 110, 255)  # W&B point clouds take colours in 0..255
POINT_VOXEL_RGB = (255, 140, 0)


class MeshLogger(ValidationSamplesCallback):
    """Every ``every_n_epochs`` validation runs, the meshes predicted from view a of ``num_samples`` fixed
    validation objects, each with its ground-truth voxels (the voxels only score predictions; seeing them
    beside the mesh tells whether a good or bad IoU is deserved).

    Files in ``<run folder>/media/meshes/e<epoch>_s<step>/`` (see :func:`~recon.callbacks.run_folder.run_folder`),
    one pair per object named ``<row>_<category>_<object>_v<view>``:

    - ``.obj``: the predicted mesh alone (642 vertices, 1280 faces), for any mesh tool;
    - ``.glb``: the predicted mesh (light blue; in its predicted colours for a model with colours) in place
      and the ground-truth voxels as gray cubes shifted ``offset`` along +x: a side-by-side scene.

    To every ``WandbLogger``: ``key`` — the ``.glb`` scenes as ``wandb.Object3D``; ``points_key`` — point sets
    (N, 6) with the mesh's vertices (blue) and the centres of the ground truth's surface voxels (orange)
    overlaid in the same frame, to judge alignment (a colour model's vertices in their own colours). Voxels map
    to mesh coordinates as
    :mod:`recon.callbacks.voxels` documents. Rank 0 only, once per logged validation.

    Args:
        every_n_epochs: log at the first validation run and every N-th after it.
        num_samples: objects logged: the first items of the first validation batches.
        offset: x shift of the voxels in the ``.glb`` scene, in mesh units (the mesh lies in (−0.5, 0.5)³).
        key: the W&B key of the scenes.
        points_key: the W&B key of the point sets; ``None`` to log none.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 4,
        offset: float = 1.2,
        key: str = "val/meshes",
        points_key: str | None = "val/mesh_points",
    ) -> None:
        super().__init__(every_n_epochs, num_samples)
        self.offset = offset
        self.key = key
        self.points_key = points_key

    @override
    def log_samples(self, trainer: Trainer, pl_module: LightningModule, samples: dict[str, Tensor]) -> None:
        if "vertices" not in samples:
            return  # the module's validation step returned no meshes
        faces = pl_module.faces.cpu().numpy()
        vertices = samples["vertices"].float().cpu().numpy()
        colored = "colors" in samples
        if colored:
            mesh_colors = [vertex_colors(faces, c.float().cpu().numpy(), len(vertices[0])) for c in samples["colors"]]
        else:
            mesh_colors = [np.tile(MESH_COLOR, (vertices.shape[1], 1))] * len(vertices)
        voxels = samples.get("voxels")
        folder = run_folder(trainer) / "media" / "meshes" / stamp(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        names = sample_names(samples, pl_module.category_names)
        scenes, clouds = [], []
        for index, (name, mesh) in enumerate(zip(names, vertices, strict=True)):
            save_mesh(folder / f"{name}.obj", mesh, faces, vertex_colors=mesh_colors[index] if colored else None)
            scene_vertices, scene_faces, colors = mesh, faces, mesh_colors[index]
            if voxels is not None:
                cubes, cube_faces = voxel_surface(voxels[index])
                scene_vertices = np.concatenate([mesh, cubes + np.float32([self.offset, 0.0, 0.0])])
                scene_faces = np.concatenate([faces, cube_faces + len(mesh)])
                colors = np.concatenate([colors, np.tile(VOXEL_COLOR, (len(cubes), 1))])
                clouds.append(point_set(mesh, voxel_centers(voxels[index], surface_only=True),
                                        mesh_colors[index] if colored else None))
            scenes.append(save_mesh(folder / f"{name}.glb", scene_vertices, scene_faces, vertex_colors=colors))

        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        import wandb

        where = "left: predicted mesh; right: ground-truth voxels" if voxels is not None else "predicted mesh"
        pairs = zip(scenes, names, strict=True)
        media = {self.key: [wandb.Object3D(str(path), caption=f"{name} ({where})") for path, name in pairs]}
        if self.points_key and clouds:
            overlay = "blue: mesh vertices; orange: ground-truth surface voxel centres"
            media[self.points_key] = [wandb.Object3D(cloud, caption=f"{name} ({overlay})")
                                      for cloud, name in zip(clouds, names, strict=True)]
        for logger in loggers:
            logger.log_metrics(media, step=log_step(trainer))


def point_set(mesh_vertices: np.ndarray, voxel_points: np.ndarray, mesh_colors: np.ndarray | None = None) -> np.ndarray:
    """``(V, 3)`` mesh vertices and ``(N, 3)`` voxel centres → ``(V + N, 6)`` float: x, y, z, r, g, b (0..255).

    ``mesh_colors``: ``(V, 3)`` in [0, 1] for the vertices; default ``POINT_MESH_RGB`` (blue)."""
    rgb = np.tile(POINT_MESH_RGB, (len(mesh_vertices), 1)) if mesh_colors is None else np.clip(mesh_colors, 0, 1) * 255
    mesh = np.concatenate([mesh_vertices, rgb], axis=1)
    voxels = np.concatenate([voxel_points, np.tile(POINT_VOXEL_RGB, (len(voxel_points), 1))], axis=1)
    return np.concatenate([mesh, voxels]).astype(np.float64)


def vertex_colors(faces: np.ndarray, colors: np.ndarray, num_vertices: int) -> np.ndarray:
    """A colour model's ``colors`` → ``(V, 3)`` per-vertex colours: as they are when per vertex; per face
    ``(F, 3)``, each vertex gets the mean of its faces' colours (the scene shares vertices with the voxels)."""
    if len(colors) == num_vertices:
        return colors
    total = np.zeros((num_vertices, 3))
    count = np.zeros((num_vertices, 1))
    for corner in range(3):
        np.add.at(total, faces[:, corner], colors)
        np.add.at(count, faces[:, corner], 1.0)
    return total / np.maximum(count, 1.0)
