"""Offline stand-ins for the Qualifio GDPR export API and the Salesforce Portability API.

The sandbox exists so the DSAR case manager can be demoed and tested end to end without a
network or vendor accounts. It is product tooling, not product code: nothing outside
``sandbox/`` and ``tests/sandbox/`` may import it. Start it with
``sandbox.server.start_sandbox`` or ``python -m sandbox``; see ``sandbox/README.md``.
"""
