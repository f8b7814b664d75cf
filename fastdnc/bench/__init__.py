"""Benchmarking fastdnc against autograd, ``torch.func`` and the peer libraries: the cases
(:mod:`.cases`), the two-minute table for a user's machine (:mod:`.quick`, ``fastdnc bench
--quick``), regressions by ratio between two suite runs (:mod:`.compare`, ``fastdnc bench
--compare``) and the timer with the matmul roofline (:mod:`.timing`)."""
