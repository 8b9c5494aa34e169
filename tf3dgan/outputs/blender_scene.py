"""Blender side of the render stage: build a scene around one model and render it from one or more views.

This file runs *inside* Blender (3.4 and 4.x, background mode), started by ``tf3dgan.outputs.render``::

    blender -b --factory-startup -noaudio --python-exit-code 1 --python blender_scene.py -- \\
        --model chair.obj --format obj --engine cycles --samples 16 --resolution 256 \\
        --color 0.56,0.72,0.87 --view 50 30 0 2.0 out.png [--view ...]

It uses only ``bpy``, ``mathutils`` and the standard library (Blender's Python has no numpy), and imports ``bpy``
inside the functions, so the host can import this module for :func:`parse_color` without Blender.

Scene.  The factory-startup objects are deleted and the model is imported with the importer this Blender has
(``wm.obj_import`` / ``wm.ply_import`` / ``wm.stl_import`` where present, else ``import_scene.obj`` /
``import_mesh.ply`` / ``import_mesh.stl``; the host converts other formats to .obj first).  Files are read as z-up
(tf3dgan's and ModelNet's convention; ``--up y`` for y-up files), then moved so the centre of their bounding box is
at the origin and scaled so the box's diagonal is 1 (bounding sphere of radius 0.5).  Faces meeting at more than
30 degrees stay sharp (voxel cubes look like cubes), smoother surfaces are shaded smooth.

Camera (the original render_class_view.py's parameters): ``azimuth`` degrees around the vertical (z) axis,
counter-clockwise seen from above, 0 on the -y axis (Blender's front view; ModelNet chairs face -y, so 0 looks at
their front), 90 on +x (a larger azimuth moves the camera to its right); ``elevation`` degrees above the horizontal
plane; ``tilt`` rolls the camera about its line of sight (positive: the camera turns counter-clockwise, so the model
appears turned clockwise); ``distance`` from the origin.  The camera looks at the origin with a 50 mm lens on a
36 mm sensor (39.6 degree field of view), so the default distance 2 shows the whole model with a margin.

Lights: a sun above and to the left of the camera (it follows the camera from view to view) and a soft grey world
light for fill.  The background is transparent (RGBA PNG).  On failure one line ``TF3DGAN-ERROR: <message>`` is
printed and Blender exits with status 1.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
import traceback

ERROR_PREFIX = "TF3DGAN-ERROR: "
WROTE_PREFIX = "TF3DGAN-WROTE: "
ENGINES = ("cycles", "workbench", "eevee")
FORMATS = ("obj", "ply", "stl")
SHARP_ANGLE = 30.0   # degrees: edges between faces meeting at more than this stay sharp
SENSOR_MM, LENS_MM = 36.0, 50.0
EXACT_BOX_VERTICES = 300_000   # above this many vertices the box is taken from the objects' bound_box corners


class SceneError(Exception):
    """A problem to report as one line."""


# ------------------------------------------------------------------------------------------------ pure helpers
def parse_color(text: str) -> tuple[float, float, float]:
    """``#rrggbb`` / ``rrggbb`` / ``#rgb`` or ``r,g,b`` floats in [0, 1] (sRGB) -> an (r, g, b) tuple of floats."""
    s = str(text).strip()
    hexpart = s[1:] if s.startswith("#") else s
    if re.fullmatch(r"[0-9a-fA-F]{6}", hexpart) or (s.startswith("#") and re.fullmatch(r"[0-9a-fA-F]{3}", hexpart)):
        if len(hexpart) == 3:
            hexpart = "".join(c * 2 for c in hexpart)
        return tuple(int(hexpart[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
    parts = [p for p in re.split(r"[,\s]+", s) if p]
    if len(parts) == 3:
        try:
            rgb = tuple(float(p) for p in parts)
        except ValueError:
            rgb = None
        if rgb is not None:
            if all(0.0 <= c <= 1.0 for c in rgb):
                return rgb
            raise ValueError(f"color {text!r}: r,g,b values must be between 0 and 1")
    raise ValueError(f"color {text!r} is neither a hex color like #8fb8de nor r,g,b floats like 0.56,0.72,0.87")


def srgb_to_linear(c: float) -> float:
    """One sRGB channel (0..1) to linear light (Blender's material colours are linear)."""
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def spherical(azimuth: float, elevation: float, distance: float) -> tuple[float, float, float]:
    """The point at ``distance`` from the origin, ``elevation`` degrees above the xy plane and ``azimuth`` degrees
    counter-clockwise (seen from above) around z from the -y axis: 0 on -y, 90 on +x, 180 on +y, 270 on -x."""
    az, el = math.radians(azimuth), math.radians(elevation)
    return (distance * math.cos(el) * math.sin(az), -distance * math.cos(el) * math.cos(az),
            distance * math.sin(el))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="blender_scene.py", description="(runs inside Blender) render a model")
    p.add_argument("--model", required=True)
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--up", choices=("z", "y"), default="z")
    p.add_argument("--engine", choices=ENGINES, default="cycles")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--color", default="#8fb8de")
    p.add_argument("--view", nargs=5, action="append", required=True, metavar=("AZ", "EL", "TILT", "DIST", "PNG"))
    return p.parse_args(argv)


def script_args(argv: list[str]) -> list[str]:
    """The arguments after Blender's ``--`` separator."""
    return argv[argv.index("--") + 1:] if "--" in argv else []


# ------------------------------------------------------------------------------------------------ scene
def _has_op(group: str, name: str) -> bool:
    import bpy

    # bpy.ops.<group>.<anything> always resolves to a lazy wrapper; dir() lists only the registered operators
    return name in dir(getattr(bpy.ops, group))


def clear_scene() -> None:
    import bpy

    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj, do_unlink=True)
    for coll in (bpy.data.meshes, bpy.data.materials, bpy.data.lights, bpy.data.cameras):
        for block in list(coll):
            if block.users == 0:
                coll.remove(block)


def import_model(path: str, fmt: str) -> list:
    """Import ``path`` with coordinates as in the file (no axis change); returns the new objects."""
    import bpy

    before = set(bpy.data.objects)
    axes_new = dict(forward_axis="Y", up_axis="Z")      # the identity for the C++ importers
    axes_old = dict(axis_forward="Y", axis_up="Z")      # ... and for the Python ones
    if fmt == "obj":
        if _has_op("wm", "obj_import"):
            bpy.ops.wm.obj_import(filepath=path, **axes_new)
        elif _has_op("import_scene", "obj"):
            bpy.ops.import_scene.obj(filepath=path, **axes_old)
        else:
            raise SceneError("this Blender has no OBJ importer (wm.obj_import or import_scene.obj)")
    elif fmt == "ply":
        if _has_op("wm", "ply_import"):
            bpy.ops.wm.ply_import(filepath=path, **axes_new)
        elif _has_op("import_mesh", "ply"):
            bpy.ops.import_mesh.ply(filepath=path)       # no axis options: coordinates are kept
        else:
            raise SceneError("this Blender has no PLY importer (wm.ply_import or import_mesh.ply)")
    elif fmt == "stl":
        if _has_op("wm", "stl_import"):
            bpy.ops.wm.stl_import(filepath=path, **axes_new)
        elif _has_op("import_mesh", "stl"):
            bpy.ops.import_mesh.stl(filepath=path, **axes_old)
        else:
            raise SceneError("this Blender has no STL importer (wm.stl_import or import_mesh.stl)")
    else:
        raise SceneError(f"unknown model format {fmt!r}")
    return [o for o in bpy.data.objects if o not in before]


def normalise(objects: list, up: str, name: str) -> int:
    """Turn y-up models upright, centre the bounding box at the origin and scale its diagonal to 1.

    Returns the number of triangles-or-polygons (for the log)."""
    import bpy
    from mathutils import Matrix, Vector

    meshes = [o for o in objects if o.type == "MESH" and len(o.data.vertices)]
    if not meshes:
        raise SceneError(f"{name}: no mesh with vertices in the file")
    turn = Matrix.Rotation(math.radians(90.0), 4, "X") if up == "y" else Matrix.Identity(4)
    bpy.context.view_layer.update()
    exact = sum(len(o.data.vertices) for o in meshes) <= EXACT_BOX_VERTICES
    lo, hi = [math.inf] * 3, [-math.inf] * 3
    for o in meshes:
        m = turn @ o.matrix_world
        # every vertex (the bound_box corners are loose when an object is rotated); the corners for big meshes
        points = (m @ v.co for v in o.data.vertices) if exact else (m @ Vector(c) for c in o.bound_box)
        for p in points:
            for i in range(3):
                lo[i] = min(lo[i], p[i])
                hi[i] = max(hi[i], p[i])
    lo, hi = Vector(lo), Vector(hi)
    diag = (hi - lo).length
    if not math.isfinite(diag) or diag <= 0:
        raise SceneError(f"{name}: the model has no extent (all vertices at one point)")
    centre = (lo + hi) / 2
    fit = Matrix.Scale(1.0 / diag, 4) @ Matrix.Translation(-centre) @ turn
    for o in objects:
        if o.parent is None or o.parent not in objects:
            o.matrix_world = fit @ o.matrix_world
    bpy.context.view_layer.update()
    return sum(len(o.data.polygons) for o in meshes)


def shade(objects: list, rgb_srgb: tuple[float, float, float]) -> None:
    """One material of colour ``rgb_srgb`` on every mesh; smooth shading with sharp edges above SHARP_ANGLE."""
    import bpy

    lin = tuple(srgb_to_linear(c) for c in rgb_srgb)
    mat = bpy.data.materials.new("tf3dgan_model")
    mat.diffuse_color = (*lin, 1.0)        # what workbench shows
    mat.use_nodes = True
    bsdf = next((n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = (*lin, 1.0)
        bsdf.inputs["Roughness"].default_value = 0.6
        for key in ("Specular", "Specular IOR Level"):   # 3.x / 4.x names
            if key in bsdf.inputs:
                bsdf.inputs[key].default_value = 0.3
    angle = math.radians(SHARP_ANGLE)
    for o in objects:
        if o.type != "MESH":
            continue
        me = o.data
        me.materials.clear()
        me.materials.append(mat)
        if getattr(me, "has_custom_normals", False):   # imported normals would override the smoothing below
            bpy.context.view_layer.objects.active = o
            try:
                with bpy.context.temp_override(object=o, active_object=o):
                    bpy.ops.mesh.customdata_custom_splitnormals_clear()
            except Exception:   # keep the file's normals then
                pass
        if hasattr(me, "set_sharp_from_angle"):         # Blender 4.1+
            me.shade_smooth()
            me.set_sharp_from_angle(angle=angle)
        elif hasattr(me, "use_auto_smooth"):            # Blender up to 4.0
            me.polygons.foreach_set("use_smooth", [True] * len(me.polygons))
            me.use_auto_smooth = True
            me.auto_smooth_angle = angle
        me.update()


def add_camera():
    import bpy

    cam_data = bpy.data.cameras.new("tf3dgan_camera")
    cam_data.lens = LENS_MM
    cam_data.sensor_width = SENSOR_MM
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.clip_start = 0.01
    cam_data.clip_end = 1000.0
    cam = bpy.data.objects.new("tf3dgan_camera", cam_data)
    bpy.context.scene.collection.objects.link(cam)
    bpy.context.scene.camera = cam
    return cam


def look_from(obj, position, roll_deg: float = 0.0) -> None:
    """Put ``obj`` (camera or light: both look along their local -z) at ``position``, looking at the origin."""
    from mathutils import Quaternion, Vector

    pos = Vector(position)
    direction = -pos
    if direction.length == 0:
        raise SceneError("a view has distance 0 (the camera would sit at the model's centre)")
    q = direction.to_track_quat("-Z", "Y")
    if roll_deg:
        q = q @ Quaternion((0.0, 0.0, 1.0), math.radians(roll_deg))
    obj.rotation_mode = "QUATERNION"
    obj.rotation_quaternion = q
    obj.location = pos


def add_lights():
    import bpy

    sun_data = bpy.data.lights.new("tf3dgan_sun", type="SUN")
    sun_data.energy = 3.5
    if hasattr(sun_data, "angle"):
        sun_data.angle = math.radians(8.0)   # slightly soft shadows
    sun = bpy.data.objects.new("tf3dgan_sun", sun_data)
    bpy.context.scene.collection.objects.link(sun)

    world = bpy.context.scene.world or bpy.data.worlds.new("tf3dgan_world")
    bpy.context.scene.world = world
    world.use_nodes = True
    bg = next((n for n in world.node_tree.nodes if n.type == "BACKGROUND"), None)
    if bg is not None:
        bg.inputs["Color"].default_value = (0.8, 0.8, 0.85, 1.0)
        bg.inputs["Strength"].default_value = 0.4
    world.color = (0.8, 0.8, 0.85)
    return sun


def set_eevee(render) -> None:
    """EEVEE is ``BLENDER_EEVEE_NEXT`` in Blender 4.2-4.x, ``BLENDER_EEVEE`` before (and again from 5.0)."""
    for name in ("BLENDER_EEVEE_NEXT", "BLENDER_EEVEE"):
        try:
            render.engine = name
            return
        except TypeError:   # "enum ... not found"
            continue
    raise SceneError("this Blender has no EEVEE engine")


def setup_render(engine: str, samples: int, resolution: int) -> None:
    import bpy

    scene = bpy.context.scene
    r = scene.render
    if engine == "cycles":
        r.engine = "CYCLES"
        cy = scene.cycles
        cy.device = "CPU"
        cy.samples = samples
        if hasattr(cy, "preview_samples"):
            cy.preview_samples = samples
        denoise = False
        try:
            import _cycles

            denoise = bool(getattr(_cycles, "with_openimagedenoise", False))
        except ImportError:
            pass
        cy.use_denoising = denoise      # Debian's Blender is built without OpenImageDenoise: rendering would fail
        if denoise:
            try:
                cy.denoiser = "OPENIMAGEDENOISE"
            except (TypeError, ValueError):
                pass
        for key, value in (("max_bounces", 4), ("diffuse_bounces", 2), ("glossy_bounces", 2),
                           ("transmission_bounces", 2), ("transparent_max_bounces", 4)):
            if hasattr(cy, key):
                setattr(cy, key, value)
    elif engine == "workbench":
        r.engine = "BLENDER_WORKBENCH"
        shading = scene.display.shading
        shading.light = "STUDIO"
        try:   # brighter than "Default", with the light from above like the other engines' sun
            shading.studio_light = "outdoor.sl"
        except (TypeError, ValueError):
            pass
        shading.color_type = "MATERIAL"
        for key, value in (("show_shadow", True), ("shadow_intensity", 0.35), ("show_cavity", False)):
            if hasattr(shading, key):
                setattr(shading, key, value)
        if hasattr(scene.display, "render_aa"):
            scene.display.render_aa = "8" if samples >= 8 else ("5" if samples >= 5 else "FXAA")
    elif engine == "eevee":
        set_eevee(r)
        ee = scene.eevee
        if hasattr(ee, "taa_render_samples"):
            ee.taa_render_samples = samples
        for key in ("use_soft_shadows", "use_gtao"):
            if hasattr(ee, key):
                setattr(ee, key, True)
    else:
        raise SceneError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    r.resolution_x = r.resolution_y = resolution
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = True
    r.use_file_extension = False
    settings = r.image_settings
    settings.file_format = "PNG"
    settings.color_mode = "RGBA"
    settings.color_depth = "8"
    try:   # the colour asked for, not Filmic's / AgX's
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
    except (TypeError, ValueError):
        pass


def render_to(path: str) -> None:
    import bpy

    bpy.ops.render.render()
    result = bpy.data.images.get("Render Result")
    if result is None:
        raise SceneError("Blender produced no render result")
    # save_render applies the scene's output settings (RGBA PNG, view transform); unlike render.filepath it does not
    # turn '#' in the path into frame numbers
    result.save_render(filepath=path, scene=bpy.context.scene)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise SceneError(f"Blender did not write {path}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(script_args(sys.argv if argv is None else argv))
    if not os.path.isfile(args.model):
        raise SceneError(f"{args.model}: no such file")
    if args.samples < 1 or args.resolution < 1:
        raise SceneError("--samples and --resolution must be at least 1")
    rgb = parse_color(args.color)
    views = []
    for az, el, tilt, dist, out in args.view:
        views.append((float(az), float(el), float(tilt), float(dist), out))

    start = time.perf_counter()
    clear_scene()
    objects = import_model(os.path.abspath(args.model), args.format)
    faces = normalise(objects, args.up, args.model)
    shade(objects, rgb)
    cam = add_camera()
    sun = add_lights()
    setup_render(args.engine, args.samples, args.resolution)
    print(f"tf3dgan: scene ready ({faces} polygons, {time.perf_counter() - start:.2f} s)", flush=True)
    for az, el, tilt, dist, out in views:
        look_from(cam, spherical(az, el, dist), tilt)
        # the key light comes from 40 degrees to the camera's left and 35 degrees above it, whatever the view
        look_from(sun, spherical(az - 40.0, max(35.0, min(el + 35.0, 80.0)), 10.0))
        t = time.perf_counter()
        render_to(os.path.abspath(out))
        print(f"{WROTE_PREFIX}{out} ({time.perf_counter() - t:.2f} s)", flush=True)


def _last_line(text: str) -> str:
    """The gist of a message that may hold a whole traceback (operators raise RuntimeError with one)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Location:")]
    gist = lines[-1] if lines else text.strip()
    return gist if len(gist) <= 300 else gist[:297] + "..."


def _entry() -> None:
    try:
        main()
    except SystemExit:
        raise
    except BaseException as exc:
        if isinstance(exc, SceneError):
            msg = str(exc)
        else:   # a bug or an API this Blender lacks: the traceback helps
            traceback.print_exc()
            msg = f"{type(exc).__name__}: {_last_line(str(exc))}"
        sys.stderr.flush()
        print(ERROR_PREFIX + " ".join(msg.split()), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    _entry()
