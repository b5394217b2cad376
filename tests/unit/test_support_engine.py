"""The engine-like mocks themselves (tests/support/engine.py, program.py): what they model must hold,
or the tests built on them prove nothing."""

import pulumi

from tests.support.program import run_program, use_mocks


class Leaky(pulumi.ComponentResource):
    def __init__(self, name):
        super().__init__("registry:test:Leaky", name, None, None)
        self.register_outputs({"marker": "plain-marker-0123456789"})


def test_component_outputs_are_part_of_the_state():
    """Component outputs (register_outputs) are stored in state by the engine; state_text() has them."""
    monitor = use_mocks()

    @pulumi.runtime.test
    def run():
        return pulumi.Output.from_input(Leaky("leaky").urn)

    run()
    assert "plain-marker-0123456789" in monitor.state_text()


def test_each_run_has_its_own_stack_as_root():
    """Each run parents top-level resources to a Stack named after that run's stack."""
    run_program({}, stack="first")
    second = run_program({}, stack="second")
    component = second.monitor.one("registry:index:PrivateRegistry")
    assert component.parent == "urn:pulumi:second::private-registry::pulumi:pulumi:Stack::private-registry-second"


def test_shared_state_keeps_outputs_of_unchanged_resources():
    """With a shared state, a second run of the same config sees the first run's keys and
    certificates (as the engine keeps them), so every resource's inputs are identical; without
    state, the providers make new keys and the certificate inputs differ."""
    state: dict = {}
    first, second = run_program({}, state=state), run_program({}, state=state)
    a = {r.urn: r.plain_inputs for r in first.monitor.registered}
    b = {r.urn: r.plain_inputs for r in second.monitor.registered}
    assert a.keys() == b.keys() and [u for u in a if a[u] != b[u]] == []
    fresh = {r.urn: r.plain_inputs for r in run_program({}).monitor.registered}
    assert any(fresh[u] != a[u] for u in a)


def test_additional_secret_outputs_are_applied():
    """Like the engine, a tls PrivateKey's PEM comes back secret although the mock returns it plain."""
    run = run_program({})
    key = next(r for r in run.monitor.by_type("tls:index/privateKey:PrivateKey"))
    assert "privateKeyPem" in key.additional_secret_outputs
    assert pulumi.runtime.rpc.is_rpc_secret(key.outputs["privateKeyPem"])


def test_state_keeps_secretness_per_value_inside_lists():
    """state_text() encrypts exactly the secret items of a list, as the engine does: a plain
    item next to a secret one stays visible (so a test can catch a plain htpasswd upload beside
    a secret key upload), and the secret one does not appear."""
    monitor = use_mocks()

    @pulumi.runtime.test
    def run():
        thing = pulumi.CustomResource(
            "test:index:Thing", "thing", {"items": [pulumi.Output.secret("s3cr3t-value-91ab"), "plain-marker-77cd"]}
        )
        return thing.urn

    run()
    text = monitor.state_text()
    assert "plain-marker-77cd" in text
    assert "s3cr3t-value-91ab" not in text
