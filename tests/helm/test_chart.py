"""The Helm chart (helm/ordertrail), through the real Helm engine and the Kubernetes schemas.

Run by tests/helm/run.sh, which installs helm-python-sdk (Helm v4's Go SDK behind a C ABI: no helm binary) and
kubernetes-validate. ORDERTRAIL_BIN is the ordertrail binary whose `validate-config` judges each rendered
configuration and whose `print-default-config` the chart's defaults are held to.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import unittest
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "ordertrail"
BIN = os.environ.get("ORDERTRAIL_BIN", str(ROOT / "target" / "debug" / "ordertrail"))
# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and a current one.
KUBERNETES_VERSIONS = ["1.25.0", "1.33.0"]
# Objects of the Prometheus Operator's CRDs: kubernetes-validate has no schema for them.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
VALUES_FILES = sorted((CHART / "ci").glob("*.yaml")) + sorted((CHART / "examples").glob("*.yaml"))


def values_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict | None, namespace: str = "observability") -> dict[str, str]:
    chart = helm.Chart.load(CHART)
    return chart.render(values, name="ordertrail", namespace=namespace, is_install=True)


def objects(manifests: dict[str, str]) -> list[dict]:
    found = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"{len(matches)} {kind} objects named {name}: {[o['metadata']['name'] for o in objs]}"
    return matches[0]


# Where ci/ values files mount Secrets; the test stands in for them with files in a temporary directory.
SECRETS = "/etc/ordertrail/secrets"


def validate_config(text: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as secrets, tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        # Files the configuration names under the Secrets' mount point exist in the pod; here, stand-ins do.
        for path in set(re.findall(re.escape(SECRETS) + r"/[\w./-]+", text)):
            stand_in = Path(secrets + path[len(SECRETS):])
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("stand-in\n")
        f.write(text.replace(SECRETS, secrets))
        f.flush()
        return subprocess.run([BIN, "validate-config", f.name], capture_output=True, text=True, timeout=60)


class ChartLoadsAndLints(unittest.TestCase):
    def test_the_chart_loads_with_its_schema(self):
        chart = helm.Chart.load(CHART)
        self.assertEqual(chart.name, "ordertrail")
        self.assertIsNotNone(chart.schema, "values.schema.json is part of the chart")

    def test_lint_is_clean_in_strict_mode_for_every_values_file(self):
        for path in [None, *VALUES_FILES]:
            with self.subTest(values=path and path.name):
                report = helm.lint(CHART, values_of(path) if path else None, strict=True, namespace="observability")
                self.assertEqual(report["errors"], [])
                # Severity 2 is a warning, 3 an error; info (an icon is recommended) is fine.
                serious = [m for m in report["messages"] if m["severity"] >= 2]
                self.assertEqual(serious, [])


class EveryRenderedObjectIsValid(unittest.TestCase):
    def test_every_values_file_renders_objects_kubernetes_accepts_and_a_configuration_ordertrail_accepts(self):
        for path in [None, *VALUES_FILES]:
            with self.subTest(values=path and path.name):
                objs = objects(render(values_of(path) if path else None))
                kinds = sorted(o["kind"] for o in objs)
                self.assertTrue({"StatefulSet", "Deployment"} & set(kinds), kinds)
                for obj in objs:
                    if obj["kind"] in CUSTOM_KINDS:
                        continue
                    for version in KUBERNETES_VERSIONS:
                        try:
                            kubernetes_validate.validate(obj, version, strict=True)
                        except kubernetes_validate.ValidationError as e:
                            self.fail(f"{obj['kind']} {obj['metadata']['name']} on {version}: {e}")
                config = one(objs, "ConfigMap", "ordertrail")["data"]["config.yaml"]
                checked = validate_config(config)
                self.assertEqual(checked.returncode, 0, f"ordertrail refuses the rendered config:\n{checked.stderr}")

    def test_the_default_release_has_every_object_the_chart_promises(self):
        objs = objects(render(None))
        names = sorted((o["kind"], o["metadata"]["name"]) for o in objs)
        self.assertEqual(
            names,
            [
                ("ConfigMap", "ordertrail"),
                ("PodDisruptionBudget", "ordertrail"),
                ("Service", "ordertrail"),
                ("Service", "ordertrail-api"),
                ("Service", "ordertrail-headless"),
                ("ServiceAccount", "ordertrail"),
                ("StatefulSet", "ordertrail"),
            ],
        )

    def test_the_pod_is_locked_down_probed_and_keeps_its_store_on_a_volume(self):
        objs = objects(render(None))
        sts = one(objs, "StatefulSet")
        pod = sts["spec"]["template"]["spec"]
        container = pod["containers"][0]
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertTrue(container["securityContext"]["readOnlyRootFilesystem"])
        self.assertFalse(container["securityContext"]["allowPrivilegeEscalation"])
        self.assertEqual(container["securityContext"]["capabilities"]["drop"], ["ALL"])
        self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(container["resources"]["limits"]["memory"], "2048Mi")
        claim = sts["spec"]["volumeClaimTemplates"][0]
        self.assertEqual(claim["metadata"]["name"], "data")
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        self.assertIn("--data-dir=/var/lib/ordertrail", container["args"])
        self.assertEqual(mounts["data"], "/var/lib/ordertrail")
        self.assertIn("checksum/config", sts["spec"]["template"]["metadata"]["annotations"])

    def test_services_reach_the_ports_ordertrail_is_told_to_listen_on(self):
        values = {"ports": {"otlpGrpc": 14317, "otlpHttp": 14318, "apiHttp": 18080, "apiGrpc": 18081}}
        objs = objects(render(values))
        container = one(objs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
        container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        self.assertIn("--grpc-listen=0.0.0.0:14317", container["args"])
        self.assertIn("--api-http-listen=0.0.0.0:18080", container["args"])
        for service in [one(objs, "Service", "ordertrail"), one(objs, "Service", "ordertrail-api")]:
            for port in service["spec"]["ports"]:
                self.assertIn(port["targetPort"], container_ports)
                self.assertEqual(port["port"], container_ports[port["targetPort"]])

    def test_a_whole_configuration_file_is_used_as_given(self):
        objs = objects(render(values_of(CHART / "ci" / "config-file-values.yaml")))
        config = yaml.safe_load(one(objs, "ConfigMap", "ordertrail")["data"]["config.yaml"])
        self.assertEqual(config["exporters"]["otlp"]["endpoint"], "http://tempo-distributor.observability.svc:4317")
        self.assertNotIn("correlation", config, "the chart's `config` is not mixed in")

    def test_the_service_monitor_scrapes_the_api_service(self):
        objs = objects(render({"serviceMonitor": {"enabled": True}}))
        monitor = one(objs, "ServiceMonitor")
        self.assertEqual(monitor["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(monitor["spec"]["endpoints"][0]["port"], "api-http")
        self.assertEqual(monitor["spec"]["endpoints"][0]["path"], "/metrics")
        api = one(objs, "Service", "ordertrail-api")
        for key, value in monitor["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(api["metadata"]["labels"][key], value)


class Secured(unittest.TestCase):
    def test_secrets_are_mounted_read_only_and_the_probes_follow_the_apis_tls(self):
        objs = objects(render(values_of(CHART / "ci" / "secure-values.yaml")))
        pod = one(objs, "StatefulSet")["spec"]["template"]["spec"]
        container = pod["containers"][0]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        self.assertTrue(mounts["/etc/ordertrail/secrets/otlp-tls"]["readOnly"])
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        self.assertEqual(secrets["secret-otlp-tls"], "ordertrail-otlp-tls")
        self.assertEqual(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS")
        self.assertEqual(container["env"][0]["valueFrom"]["secretKeyRef"]["name"], "ordertrail-api-token")
        plain = one(objects(render(None)), "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(plain["readinessProbe"]["httpGet"]["scheme"], "HTTP")

    def test_a_secret_mount_needs_a_name_a_secret_and_an_absolute_path(self):
        with self.assertRaises(helm.HelmError):
            render({"secretMounts": [{"name": "tls", "secretName": "s", "mountPath": "relative/path"}]})
        with self.assertRaises(helm.HelmError):
            render({"secretMounts": [{"name": "tls", "mountPath": "/etc/x"}]})


class OnPostgres(unittest.TestCase):
    def test_with_a_postgres_secret_the_chart_renders_a_deployment_without_a_volume(self):
        objs = objects(render(values_of(CHART / "ci" / "postgres-values.yaml")))
        kinds = [o["kind"] for o in objs]
        self.assertNotIn("StatefulSet", kinds)
        deployment = one(objs, "Deployment")
        self.assertEqual(deployment["spec"]["strategy"]["rollingUpdate"], {"maxSurge": 1, "maxUnavailable": 0})
        self.assertEqual(deployment["spec"]["replicas"], 1)
        pod = deployment["spec"]["template"]["spec"]
        self.assertNotIn("persistentVolumeClaim", json.dumps(pod))
        env = pod["containers"][0]["env"][0]
        self.assertEqual(env["name"], "ORDERTRAIL_POSTGRES_URL")
        self.assertEqual(env["valueFrom"]["secretKeyRef"], {"name": "ordertrail-postgres", "key": "url"})
        config = yaml.safe_load(one(objs, "ConfigMap", "ordertrail")["data"]["config.yaml"])
        self.assertEqual(config["storage"]["postgres"], {"url_env": "ORDERTRAIL_POSTGRES_URL", "pool_size": 4})
        self.assertEqual(config["storage"]["durability"], "durable", "the rest of the section is kept")


    def test_replicas_share_postgresql_spread_over_nodes_and_need_it(self):
        values = values_of(CHART / "ci" / "postgres-values.yaml")
        values["replicaCount"] = 3
        objs = objects(render(values))
        deployment = one(objs, "Deployment")
        self.assertEqual(deployment["spec"]["replicas"], 3)
        anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        self.assertEqual(term["topologyKey"], "kubernetes.io/hostname")
        self.assertEqual(term["labelSelector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"])
        with self.assertRaises(helm.HelmError) as caught:
            render({"replicaCount": 2})
        self.assertIn("postgres.existingSecret", str(caught.exception))

    def test_tls_to_postgresql_mounts_the_secret_and_names_its_files(self):
        values = values_of(CHART / "ci" / "postgres-values.yaml")
        values["postgres"]["tls"] = {"existingSecret": "pg-tls", "clientCertificate": True, "serverName": "db.internal"}
        objs = objects(render(values))
        config = yaml.safe_load(one(objs, "ConfigMap", "ordertrail")["data"]["config.yaml"])
        self.assertEqual(
            config["storage"]["postgres"]["tls"],
            {
                "ca_file": "/etc/ordertrail/secrets/postgres-tls/ca.crt",
                "cert_file": "/etc/ordertrail/secrets/postgres-tls/tls.crt",
                "key_file": "/etc/ordertrail/secrets/postgres-tls/tls.key",
                "server_name_override": "db.internal",
            },
        )
        pod = one(objs, "Deployment")["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "postgres-tls")
        self.assertEqual(volume["secret"]["secretName"], "pg-tls")
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "postgres-tls")
        self.assertEqual(mount["mountPath"], "/etc/ordertrail/secrets/postgres-tls")
        # The rendered section is one the binary accepts once the Secret's files are there.
        checked = validate_config(yaml.safe_dump(config))
        self.assertEqual(checked.returncode, 0, checked.stderr)
        # Without the Secret nothing is mounted and the section is absent.
        plain = objects(render(values_of(CHART / "ci" / "postgres-values.yaml")))
        self.assertNotIn("postgres-tls", json.dumps(one(plain, "Deployment")))


class MonitoringObjects(unittest.TestCase):
    def test_the_prometheus_rule_carries_the_alerting_rules_file(self):
        objs = objects(render({"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}))
        rule = one(objs, "PrometheusRule")
        self.assertEqual(rule["metadata"]["labels"]["release"], "kps")
        alerts = yaml.safe_load((CHART / "files" / "ordertrail-alerts.yaml").read_text())
        self.assertEqual(rule["spec"]["groups"], alerts["groups"])

    def test_a_service_monitor_of_an_https_api_must_say_how_to_trust_it(self):
        tls = {"cert_file": "/etc/ordertrail/secrets/api/tls.crt", "key_file": "/etc/ordertrail/secrets/api/tls.key"}
        values = {"serviceMonitor": {"enabled": True}, "config": {"api": {"http": {"tls": tls}}}}
        with self.assertRaises(helm.HelmError) as caught:
            render(values)
        self.assertIn("serviceMonitor.tlsConfig", str(caught.exception))
        values["serviceMonitor"]["tlsConfig"] = {"ca": {"secret": {"name": "api-tls", "key": "ca.crt"}}}
        endpoint = one(objects(render(values)), "ServiceMonitor")["spec"]["endpoints"][0]
        self.assertEqual(endpoint["scheme"], "https")

    def test_the_dashboard_config_map_carries_the_dashboard_for_grafanas_sidecar(self):
        objs = objects(render({"grafanaDashboard": {"enabled": True}}))
        dashboard = one(objs, "ConfigMap", "ordertrail-dashboard")
        self.assertEqual(dashboard["metadata"]["labels"]["grafana_dashboard"], "1")
        parsed = json.loads(dashboard["data"]["ordertrail.json"])
        self.assertEqual(parsed, json.loads((CHART / "files" / "ordertrail-dashboard.json").read_text()))
        kubernetes_validate.validate(dashboard, KUBERNETES_VERSIONS[-1], strict=True)


class GatewayManifests(unittest.TestCase):
    def test_the_gateways_rbac_is_valid_kubernetes(self):
        path = ROOT / "collector-config" / "gateway-k8s-rbac.yaml"
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        self.assertEqual([d["kind"] for d in docs], ["ServiceAccount", "Role", "RoleBinding"])
        for doc in docs:
            for version in KUBERNETES_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)


class BadValuesAreRefused(unittest.TestCase):
    def assert_refused(self, values: dict, mentions: str):
        with self.assertRaises(helm.HelmError) as caught:
            render(values)
        self.assertIn(mentions, str(caught.exception))

    def test_the_schema_refuses_unknown_keys_and_wrong_types(self):
        self.assert_refused({"replicas": 3}, "replicas")
        self.assert_refused({"ports": {"otlpGrpc": "4317x"}}, "otlpGrpc")
        self.assert_refused({"ports": {"otlpGrpc": 70000}}, "otlpGrpc")
        self.assert_refused({"config": {"recievers": {}}}, "recievers")
        self.assert_refused({"config": {"storage": {"durability": "sometimes"}}}, "durability")
        self.assert_refused({"persistence": {"size": "ten gigs"}}, "size")
        self.assert_refused({"memory": {"limitMiB": "2Gi"}}, "limitMiB")

    def test_a_hot_set_too_large_for_the_container_is_refused(self):
        self.assert_refused({"config": {"correlation": {"max_orders": 1000000}}}, "max_orders")
        render({"config": {"correlation": {"max_orders": 1000000}}, "memory": {"requestMiB": 1024, "limitMiB": 6144}})

    def test_a_memory_limiter_at_or_above_the_container_limit_is_refused(self):
        self.assert_refused({"config": {"pipeline": {"memory_limit_mib": 4096}}}, "memory_limit_mib")
        self.assert_refused({"memory": {"requestMiB": 4096, "limitMiB": 1024}}, "requestMiB")

    def test_a_configuration_ordertrail_would_refuse_is_caught_before_it_reaches_a_cluster(self):
        objs = objects(render({"config": {"correlation": {"max_orders": 0}}}))
        checked = validate_config(one(objs, "ConfigMap", "ordertrail")["data"]["config.yaml"])
        self.assertNotEqual(checked.returncode, 0)
        self.assertIn("correlation.max_orders", checked.stderr)


class DefaultsMatchOrdertrail(unittest.TestCase):
    def test_every_setting_under_config_defaults_to_what_ordertrail_defaults_to(self):
        printed = subprocess.run([BIN, "print-default-config"], capture_output=True, text=True, check=True).stdout
        defaults = yaml.safe_load(printed)
        chart_values = helm.Chart.load(CHART).values["config"]
        mismatches = []

        def walk(values, expected, path):
            for key, value in values.items():
                where = f"{path}.{key}" if path else key
                self.assertIn(key, expected or {}, f"config.{where} is not an ordertrail setting")
                if isinstance(value, dict) and value:
                    walk(value, expected[key], where)
                elif value != expected[key] and not (value in (None, {}) and expected[key] in (None, {})):
                    mismatches.append((where, value, expected[key]))

        walk(chart_values, defaults, "")
        # Sized for the chart's container on purpose (the chart checks it against memory.limitMiB).
        sized = {"correlation.max_orders"}
        self.assertEqual([m for m in mismatches if m[0] not in sized], [], "values.yaml `config` differs from ordertrail's")
        self.assertEqual([m[0] for m in mismatches], ["correlation.max_orders"])

    def test_notes_say_how_to_find_an_order_trace_and_warn_without_an_exporter(self):
        notes = render(None)["ordertrail/templates/NOTES.txt"]
        self.assertIn("Jaeger", notes)
        self.assertIn("Tempo", notes)
        self.assertIn("config.exporters.otlp is not set", notes)
        tempo = render(values_of(CHART / "examples" / "tempo.yaml"))["ordertrail/templates/NOTES.txt"]
        self.assertNotIn("is not set", tempo)


if __name__ == "__main__":
    unittest.main()
