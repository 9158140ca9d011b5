"""Running an image without a container engine: its layers unpacked into a folder (whiteouts
applied, nothing written outside it), its entrypoint started there under bubblewrap, with
qemu-user for another architecture.

* :mod:`.rootfs` unpacks an image's layers into a folder, and keeps one unpacked tree per image
  digest in the cache;
* :mod:`.sandbox` is the host side: what bubblewrap and qemu-user need, and the command line that
  runs a program in a tree;
* :mod:`.launch` reads what the image's config says to run (entrypoint, cmd, env, user, working
  folder) against its tree;
* :mod:`.process` starts that command, forwards Ctrl-C / SIGTERM to the program (not to
  bubblewrap, which would kill it) and hands back its exit status;
* :mod:`.probe` starts an ociforge serving image and asks it one request (for
  ``build(verify=True)``).
"""
