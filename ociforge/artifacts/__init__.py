"""Model weights as registry artifacts: KServe modelcars and CNCF ModelPack (:mod:`.build`).

``ociforge.weights(paths, to=..., format="modelcar"|"modelpack")`` is :func:`.build.weights`. The
package is not named ``weights`` so that it is never shadowed by that function (or the reverse).
"""
