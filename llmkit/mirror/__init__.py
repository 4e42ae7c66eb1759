"""The model mirror: fetch a model once, verify it, publish it (and the host bootstrap bundle).

- :mod:`llmkit.mirror.manifest`: ``manifest.json`` (model, tag, files, sizes, sha256, source, time)
- :mod:`llmkit.mirror.download`: parallel ranged downloads that resume, retry and verify
- :mod:`llmkit.mirror.sources`: the Ollama registry protocol, URL lists, local files
- :mod:`llmkit.mirror.pull` / :mod:`llmkit.mirror.push`: the two halves of ``llmkit mirror``
- :mod:`llmkit.mirror.bundle` / :mod:`llmkit.mirror.wheels`: the host bootstrap bundle (releases,
  the hosts' wheels from a hash-locked requirements file, the playbooks)
- :mod:`llmkit.mirror.layout`: where things live in the model store (``models/<slug>/``, ``bootstrap/``)
"""
