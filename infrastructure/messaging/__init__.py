"""Service mode messaging on RabbitMQ (FastStream): CJ and LPS as separate processes.

* ``topology``     — exchange, queue and routing-key names, from one prefix
* ``transport``    — publishing the contracts; the outbox dispatcher's transport
* ``outcomes``     — CJ's outcome consumer with group commit
* ``lps_worker``   — the LPS worker: gather, execute, publish, acknowledge
* ``dead_letters`` — refused messages, with the reason in headers
* ``service``      — components, the run loop, the dispatcher lease and periodic loops
* ``processes``    — what ``cjledger serve`` and ``cjledger lps-worker`` are made of
"""
