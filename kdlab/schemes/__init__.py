"""Distillation schemes: ways of arranging teachers and students, one module each, each a function
that builds a trainable and calls :func:`kdlab.engine.loop.fit` (directly or through
:func:`kdlab.train` / :func:`kdlab.distill`)::

    from kdlab.schemes.mutual import mutual                  # deep mutual learning (Cohort)
    from kdlab.schemes.self_distill import byot, born_again, snapshot_distill
    from kdlab.schemes.assistant import teacher_assistant
    from kdlab.schemes.multi_teacher import multi_teacher    # kdlab.teachers.EnsembleTeacher
    from kdlab.schemes.amalgamate import amalgamate          # UnionTeacher
    from kdlab.schemes.unlabeled import unlabeled            # MixedLoader
    from kdlab.schemes.lifelong import lifelong              # LwF
    from kdlab.schemes.cross_modal import cross_modal        # view_data, PairedTeacher; kdlab.teachers.FileTeacher

    r = mutual(["cnn_tiny", "cnn_small"], "digits", epochs=5)

Each returns a :class:`kdlab.api.Result`; what the scheme measured besides the student's test
metrics is in ``Result.extra``. The package does not re-export the functions: several share their
module's name.
"""
