"""Outputs: loss graphs and 3D graphs/sheets (:mod:`.plots`), voxels → meshes (:mod:`.mesh`), sampling and
interpolation (:mod:`.sampling`), Blender rendering (:mod:`.render`, with the bpy script :mod:`.blender_scene`)."""
