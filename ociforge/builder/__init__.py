"""The model build, as a pipeline of named steps (:mod:`.build`): plan (bases, targets,
requirements) → the layers of its own → wheels → images and index → write; plus ``assemble``
(files on any base) and the checks of an offline build."""
