#!/usr/bin/env python3
"""A local Kubernetes API emulator for kubectl-mapguard's end-to-end tests.

    PYTHONPATH=/opt/mapguard-py python3 tests/kube/emulator.py --scenario FILE.json [--log FILE]

Binds 127.0.0.1 on a free port, prints exactly one line `{"port": N}` on stdout,
logs to stderr (or --log), serves until SIGTERM/SIGINT, then kills every
process it started and removes the cgroups it made. See tests/kube/README.md
for the scenario keys.

Built on kmock 0.8 (MIT, https://github.com/nolar/kmock): its
`KubernetesEmulator` gives the HTTP handler and request parsing, the
in-memory object store (`kmock.ObjectsArray`, one history per object), the
event bus (`kmock.Bus`) behind watches, its bundled list of built-in
resources, error rendering, and the request DSL used for the extra endpoints. What kmock does not do, this file adds:
uid/resourceVersion/creationTimestamp, typed lists, label and field
selectors, watch from a resourceVersion, Status error bodies, dry run,
admission, RBAC, a kubelet, logs and deletion with grace.

Where it still serves, and what moved to the real cluster
---------------------------------------------------------
A real single-node Kubernetes (tests/cluster/up.sh, scenarios in
tests/cluster_real.rs) now covers what one node can host: real RBAC from
manifests/rbac.yaml and real SelfSubjectAccessReviews, the apiserver's audit
log, real Pod Security admission messages (baseline and privileged), a real
kubelet and containerd (image import, capability sets: the agent's CapEff,
`--privileged`, StartError when a runtime cannot grant a capability),
activeDeadlineSeconds after a SIGKILLed CLI, deletion grace on SIGINT and
SIGTERM, container restarts and rollouts followed by the CLI, the kubelet's
log rotation under a high-rate trace, and kubectl's own plugin discovery.
This emulator stays for what one machine cannot host for real: several nodes
(one agent pod per node, pods on nodes that are not this one), several
contexts and kubeconfig files merged, and scripted failures of a cluster
(image pull errors, unschedulable pods, a crashing agent image).

What is real
------------
* HTTP semantics as kube-rs and kubectl expect them: JSON objects with
  `metadata.uid`, `resourceVersion`, `creationTimestamp`; lists with
  `apiVersion`, `kind` (`PodList`...), `metadata.resourceVersion`, `items`,
  `limit`/`continue` paging; errors as `Status` bodies with the reasons and
  messages of a real API server (NotFound, AlreadyExists, Forbidden,
  BadRequest, Invalid, Conflict, Expired, MethodNotAllowed); 201 on create.
* Watches: newline-delimited `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR,
  "object": ...}`; without resourceVersion (or "0") the current objects come
  first as ADDED; with a resourceVersion only later changes are replayed;
  `sendInitialEvents=true` ends the initial ADDED with the
  `k8s.io/initial-events-end` BOOKMARK; `timeoutSeconds` closes the stream;
  a selector watch turns MODIFIED into ADDED/DELETED when an object enters
  or leaves the selection (as the watch cache does).
* labelSelector (=, ==, !=, in, notin, exists, !exists, >, <) and
  fieldSelector (=, ==, !=; pods: metadata.name, metadata.namespace,
  spec.nodeName, spec.restartPolicy, spec.schedulerName,
  spec.serviceAccountName, spec.hostNetwork, status.phase, status.podIP,
  status.nominatedNodeName; other kinds: metadata.name, metadata.namespace)
  on list, watch and deletecollection, namespaced and all-namespaces URLs.
* Processes: containers are real local processes, each started inside its own
  cgroup v2 directory laid out like containerd under systemd
  (`kubepods.slice/kubepods-pod<uid>.slice/cri-containerd-<64 hex>.scope`)
  before it execs, in its own process group, stdout and stderr appended to one
  log file, and `status.containerStatuses[].containerID` is
  `containerd://<that id>`.

What is faked, and how it differs from a cluster
------------------------------------------------
* All nodes are this machine. Node objects are made from the scenario
  (InternalIP 127.0.0.1, Ready); every pod's hostIP and podIP is 127.0.0.1.
  There is no network namespace, PID namespace, mount namespace, image or
  filesystem isolation: a "container" is a host process run as root, in a
  cgroup only (a bare directory: no controller, no limit). `cgroup_root`
  must be on cgroup2; a relative name is put under the cgroup2 mount
  (/sys/fs/cgroup/unified on a hybrid host, /sys/fs/cgroup on a pure v2 one).
* No image pull: `image` is a label; agent pods run `agent_bin` (argv[0] of
  the container command replaced); `image_pull_error` is a canned
  ErrImagePull then ImagePullBackOff status.
* No scheduler: a pod runs on `spec.nodeName`; a pod without one is bound to
  the node named by a `kubernetes.io/hostname` nodeSelector or required node
  affinity, else to the first node. `unschedulable` is a canned
  PodScheduled=False condition (kept even if the creator set nodeName, which
  a real cluster would never report as unschedulable).
* The kubelet is this process: only the first container of an agent pod is
  run; init containers, probes, resources, volumes and securityContext are
  ignored; restartPolicy is treated as Never (a container that exits ends the
  pod Succeeded or Failed, there is no CrashLoopBackOff); `crash` runs a
  canned failing shell command instead of the agent; `log_break` runs the
  agent but cuts every followed log stream of its pod after the first line
  (the connection closed mid-body, as a proxy or apiserver restart does).
  `activeDeadlineSeconds` is enforced from status.startTime.
  Container env: PATH, HOME=/root, HOSTNAME=<pod name> plus `env` values and
  `valueFrom.fieldRef` (metadata.name/namespace/uid, spec.nodeName,
  spec.serviceAccountName, status.hostIP/podIP); `$(VAR)` is expanded in
  command and args. Nothing of the emulator's own environment is passed on,
  and there is no service-account token, so in-cluster config does not work.
* Pods created through the API without the agent label run too when every
  container has an absolute `command[0]` that exists here (like the scenario's
  target pods); otherwise they stay Pending in ContainerCreating.
* Admission is a canned rejection: when `admission_deny` is set, creating
  (dry run or not) a pod labelled app.kubernetes.io/managed-by=kubectl-mapguard
  returns 403 Forbidden with that message (`{name}` and `{namespace}` in it are
  replaced). No other admission plugin exists except NamespaceLifecycle
  (create into a namespace that does not exist is 404) and a minimal pod
  validation (name, spec.containers[].name/image: 422 Invalid).
* RBAC is a deny list: everything is allowed to user "kubernetes-admin"
  except what an `rbac_deny` entry matches. The deny list answers
  SelfSubjectAccessReview (and SubjectAccessReview/LocalSubjectAccessReview)
  and is also enforced on the real requests (403 with the API server's
  message). Reviews are never stored.
* Dry run (`dryRun=All`) runs RBAC, admission, validation and the name
  conflict check, answers with the object as it would be (uid, timestamps, no
  resourceVersion), stores nothing, sends no event, starts nothing.
* Deletion: a pod with a live process gets deletionTimestamp (MODIFIED, 200
  with the object), SIGTERM to its process group, SIGKILL after the grace
  (gracePeriodSeconds from the query or DeleteOptions body, else a
  terminationGracePeriodSeconds the creator set, else 2 s; 0 = SIGKILL now),
  and disappears (DELETED) once the process has exited; without a live
  process it disappears at once. Other kinds are removed at once. No garbage
  collector, no finalizers, no cascade (deleting a namespace or a Deployment
  leaves its pods), propagationPolicy is ignored.
* Logs come from the container's log file (stdout and stderr interleaved,
  no CRI framing). `timestamps=true` stamps each line with the time the
  emulator read it; `sinceSeconds`/`sinceTime` are ignored; `previous=true`
  is always 400 (nothing restarts); `tailLines` and `limitBytes` work.
  A follow stream ends when the process has exited and the file is drained,
  or when the pod is deleted.
* resourceVersion is one global counter (like an etcd revision); the last
  10 000 events are kept for watches, an older start gets an ERROR event
  with a 410 Expired Status (as from the watch cache).
* Apps objects: Deployments, StatefulSets and DaemonSets come from the
  scenario; their status (replicas, readyReplicas...) follows the pods that
  match their selector. ReplicaSets are made for pod owners of kind
  ReplicaSet, owned by the Deployment whose selector matches. Nothing
  reconciles: scaling or editing them starts or stops nothing.
* PATCH treats strategic-merge and apply patches as JSON merge patches
  (lists are replaced, not merged by key); json-patch is real. Field
  managers, managedFields and immutability rules are not kept. Only pods
  are served as a meta.k8s.io Table when asked (kubectl's READY/STATUS
  columns); other kinds come as plain objects (kubectl prints NAME/AGE).
* Served kinds: everything built in of the groups "", apps, batch and
  authorization.k8s.io (kmock's bundled resource list), in one generic store;
  the behaviour above is for pods, namespaces, nodes and apps. Discovery
  (/api, /apis, /api/v1, /apis/<group>/<version>) is rendered here from that
  list (kmock's own answers confuse kubectl); /version says v1.33.0. No
  aggregated discovery, no OpenAPI (404): use kubectl --validate=false.
* Request bodies are JSON (YAML if pyyaml is importable); protobuf is read
  only for access reviews (kubectl auth can-i sends it), anything else is 415.
* No authentication: plain HTTP, any or no credentials.

Test-only endpoints (not Kubernetes API)
----------------------------------------
GET /_emulator/requests  every API request: {method, path, query, dry_run,
                         body, status, time}
GET /_emulator/agents    agent pods ever created: {namespace, name, uid,
                         node, behaviour, pid, alive, exit_code, log, argv}
GET /_emulator/containers every container process: {namespace, pod, uid,
                         container, container_id, pid, alive, exit_code,
                         cgroup, log}
GET /_emulator/info      {cluster, port, pid, cgroup_root, log_dir}
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import datetime
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import time
import uuid
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
from kmock._internal import parsing as kmock_parsing

log = logging.getLogger('emulator')


def _safe_parse_path(path: str, _parse: Any = kmock_parsing.parse_path) -> Any:
    # kmock 0.8 raises ValueError on /api/v1/namespaces (no name after "namespaces"); the routing here
    # parses resource paths itself, so kmock only needs to not fail.
    try:
        return _parse(path)
    except ValueError:
        return kmock_parsing.ParsedPath()


kmock_parsing.parse_path = _safe_parse_path

MANAGED_BY_KEY = 'app.kubernetes.io/managed-by'
MANAGED_BY_VALUE = 'kubectl-mapguard'
USER = 'kubernetes-admin'
HOST_IP = '127.0.0.1'
DEFAULT_GRACE = 2.0
KILL_AFTER = 2.0
HISTORY_LIMIT = 10_000
CRASH_SCRIPT = 'echo "mapguard agent: loading BPF: Operation not permitted (need CAP_BPF)" >&2; exit 1'
UNSCHEDULABLE_MESSAGE = (
    "0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/disk-pressure: }, "
    "1 node(s) didn't match Pod's node affinity/selector."
)
class BrokenStream(Exception):
    """`log_break`: end a followed log stream without its last chunk."""


BEHAVIOURS = ('normal', 'image_pull_error', 'unschedulable', 'crash', 'log_break')
SERVED_GROUPS = ('', 'apps', 'authorization.k8s.io', 'batch')
SUBRESOURCE_KINDS = {'eviction': ('Eviction', 'policy', 'v1'), 'scale': ('Scale', 'autoscaling', 'v1'),
                     'binding': ('Binding', '', 'v1')}
SUBRESOURCE_VERBS = {'log': ['get'], 'status': ['get', 'patch', 'update'], 'scale': ['get', 'patch', 'update'],
                     'eviction': ['create'], 'binding': ['create'], 'exec': ['create', 'get'],
                     'attach': ['create', 'get'], 'portforward': ['create', 'get'],
                     'proxy': ['create', 'delete', 'get', 'patch', 'update'], 'finalize': ['update'],
                     'ephemeralcontainers': ['get', 'patch', 'update'], 'resize': ['get', 'patch', 'update'],
                     'token': ['create']}
BASE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
POD_FIELDS = {
    'metadata.name', 'metadata.namespace', 'spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName',
    'spec.serviceAccountName', 'spec.hostNetwork', 'status.phase', 'status.podIP', 'status.nominatedNodeName',
}
GENERIC_FIELDS = {'metadata.name', 'metadata.namespace'}
EXTRA_FIELDS = {
    'nodes': {'spec.unschedulable'},
    'namespaces': {'status.phase'},
    'events': {'involvedObject.kind', 'involvedObject.name', 'involvedObject.namespace', 'involvedObject.uid',
               'reason', 'type', 'source'},
}
NAME_RE = re.compile(r'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')
LABEL_KEY_RE = re.compile(r'([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?'
                          r'[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?')
LABEL_VALUE_RE = re.compile(r'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')


# --------------------------------------------------------------------------------------------
# Small helpers


def now_ts() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def nano_ts() -> str:
    t = time.time_ns()
    base = datetime.datetime.fromtimestamp(t // 1_000_000_000, tz=datetime.UTC).strftime('%Y-%m-%dT%H:%M:%S')
    return f'{base}.{t % 1_000_000_000:09d}Z'


def ts_after(seconds: float) -> str:
    when = datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(seconds=seconds)
    return when.strftime('%Y-%m-%dT%H:%M:%SZ')


def api_error(code: int, reason: str, message: str, details: dict | None = None) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details)


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
            'message': message, 'reason': reason, 'code': code}
    if details:
        body['details'] = details
    return body


def truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ('1', 'true', 'yes', 't', 'y')


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion in command and args; $$ escapes."""
    out, i = [], 0
    while i < len(text):
        if text.startswith('$$', i):
            out.append('$')
            i += 2
        elif text.startswith('$(', i) and (end := text.find(')', i)) > 0:
            name = text[i + 2:end]
            out.append(env[name] if name in env else text[i:end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return ''.join(out)


# --------------------------------------------------------------------------------------------
# Just enough protobuf to read kubectl's access reviews (kubectl auth can-i sends protobuf)


def _pb_fields(data: bytes) -> dict[int, list[Any]]:
    fields: dict[int, list[Any]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7f) << shift
            shift += 7
            if not b & 0x80:
                return value
    while i < len(data):
        key = varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            fields.setdefault(num, []).append(varint())
        elif wire == 2:
            n = varint()
            fields.setdefault(num, []).append(data[i:i + n])
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f'unsupported protobuf wire type {wire}')
    return fields


def decode_access_review(body: bytes) -> dict:
    """k8s protobuf envelope (magic + runtime.Unknown) holding a (Self)SubjectAccessReview, as JSON."""
    if not body.startswith(b'k8s\x00'):
        raise ValueError('no k8s protobuf magic')
    unknown = _pb_fields(body[4:])
    type_meta = _pb_fields(unknown.get(1, [b''])[0])
    review = _pb_fields(unknown.get(2, [b''])[0])
    spec = _pb_fields(review.get(2, [b''])[0])
    out_spec: dict[str, Any] = {}
    names = {1: 'namespace', 2: 'verb', 3: 'group', 4: 'version', 5: 'resource', 6: 'subresource', 7: 'name'}
    if 1 in spec:
        ra = _pb_fields(spec[1][0])
        out_spec['resourceAttributes'] = {names[k]: v[0].decode() for k, v in ra.items() if k in names and v[0]}
    if 2 in spec:
        nra = _pb_fields(spec[2][0])
        out_spec['nonResourceAttributes'] = {{1: 'path', 2: 'verb'}[k]: v[0].decode() for k, v in nra.items()
                                             if k in (1, 2) and v[0]}
    for num, key in ((3, 'user'), (5, 'uid')):
        if num in spec and isinstance(spec[num][0], bytes):
            out_spec[key] = spec[num][0].decode()
    return {'apiVersion': type_meta.get(1, [b''])[0].decode(), 'kind': type_meta.get(2, [b''])[0].decode(),
            'metadata': {}, 'spec': out_spec}


# --------------------------------------------------------------------------------------------
# Selectors


class SelectorError(ValueError):
    pass


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == '(':
            depth += 1
        elif ch == ')':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(''.join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append(''.join(cur))
    return parts


def parse_label_selector(text: str | None) -> list[tuple[str, str, tuple[str, ...]]]:
    reqs: list[tuple[str, str, tuple[str, ...]]] = []
    if not text or not text.strip():
        return reqs
    for raw in _split_top(text):
        part = raw.strip()
        if not part:
            raise SelectorError(f'unable to parse requirement: found \'\', expected: identifier in {text!r}')
        if m := re.fullmatch(r'([^\s!=<>(),]+)\s+(in|notin)\s*\(([^()]*)\)', part):
            key, op = m.group(1), m.group(2)
            values = tuple(v.strip() for v in m.group(3).split(',') if v.strip())
            if not values:
                raise SelectorError("unable to parse requirement: for 'in', 'notin' operators, "
                                    "values set can't be empty")
        elif m := re.fullmatch(r'!\s*([^\s!=<>(),]+)', part):
            key, op, values = m.group(1), '!', ()
        elif m := re.fullmatch(r'([^\s!=<>(),]+)\s*(==|!=|=|>|<)\s*([^\s!=<>(),]*)', part):
            key, op, values = m.group(1), m.group(2), (m.group(3),)
            op = '=' if op == '==' else op
        elif m := re.fullmatch(r'([^\s!=<>(),]+)', part):
            key, op, values = m.group(1), 'exists', ()
        else:
            raise SelectorError(f'unable to parse requirement: {part!r}')
        if not LABEL_KEY_RE.fullmatch(key):
            raise SelectorError(f'unable to parse requirement: values[0][{key}]: Invalid value: "{key}": name part '
                                'must consist of alphanumeric characters, \'-\', \'_\' or \'.\'')
        for v in values:
            if op in ('>', '<'):
                if not re.fullmatch(r'-?\d+', v):
                    raise SelectorError(f'unable to parse requirement: for \'Gt\', \'Lt\' operators, the value '
                                        f'must be an integer: {v!r}')
            elif not LABEL_VALUE_RE.fullmatch(v) or len(v) > 63:
                raise SelectorError(f'unable to parse requirement: values[0][{key}]: Invalid value: "{v}": a valid '
                                    'label must be an empty string or consist of alphanumeric characters')
        reqs.append((key, op, values))
    return reqs


def labels_match(reqs: list[tuple[str, str, tuple[str, ...]]], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        value = labels.get(key)
        if op == '=' and not (present and value == values[0]):
            return False
        if op == '!=' and present and value == values[0]:
            return False
        if op == 'in' and not (present and value in values):
            return False
        if op == 'notin' and present and value in values:
            return False
        if op == 'exists' and not present:
            return False
        if op == '!' and present:
            return False
        if op in ('>', '<'):
            try:
                n = int(value) if present else None
            except ValueError:
                return False
            if n is None or (op == '>' and not n > int(values[0])) or (op == '<' and not n < int(values[0])):
                return False
    return True


def selector_from_label_selector(sel: dict | None) -> list[tuple[str, str, tuple[str, ...]]]:
    """metav1.LabelSelector (matchLabels/matchExpressions) as requirements."""
    reqs: list[tuple[str, str, tuple[str, ...]]] = []
    for key, value in ((sel or {}).get('matchLabels') or {}).items():
        reqs.append((key, '=', (str(value),)))
    for expr in (sel or {}).get('matchExpressions') or []:
        op = {'In': 'in', 'NotIn': 'notin', 'Exists': 'exists', 'DoesNotExist': '!'}.get(expr.get('operator'), 'exists')
        reqs.append((expr.get('key', ''), op, tuple(expr.get('values') or ())))
    return reqs


def parse_field_selector(text: str | None, plural: str) -> list[tuple[str, str, str]]:
    reqs: list[tuple[str, str, str]] = []
    if not text or not text.strip():
        return reqs
    allowed = POD_FIELDS if plural == 'pods' else GENERIC_FIELDS | EXTRA_FIELDS.get(plural, set())
    for raw in re.split(r'(?<!\\),', text):
        part = raw.strip()
        m = re.fullmatch(r'([^=!]+?)\s*(==|!=|=)\s*(.*)', part)
        if not m:
            raise SelectorError(f'invalid selector: \'{text}\'; can\'t understand \'{part}\'')
        field, op, value = m.group(1), m.group(2), m.group(3).replace('\\,', ',')
        if field not in allowed:
            raise SelectorError(f'field label not supported: {field}')
        reqs.append((field, '!=' if op == '!=' else '=', value))
    return reqs


def field_value(obj: dict, field: str) -> str:
    cur: Any = obj
    for part in field.split('.'):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        return 'false' if field in ('spec.hostNetwork', 'spec.unschedulable') else ''
    if isinstance(cur, bool):
        return 'true' if cur else 'false'
    return str(cur)


def fields_match(reqs: list[tuple[str, str, str]], obj: dict) -> bool:
    for field, op, value in reqs:
        actual = field_value(obj, field)
        if (op == '=' and actual != value) or (op == '!=' and actual == value):
            return False
    return True


# --------------------------------------------------------------------------------------------
# Runtime state of containers and agents (what a kubelet + containerd would know)


class Container:
    def __init__(self, *, namespace: str, pod: str, uid: str, name: str, cid: str, cgroup: str, log_path: str):
        self.namespace, self.pod, self.uid, self.name = namespace, pod, uid, name
        self.cid, self.cgroup, self.log_path = cid, cgroup, log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.argv: list[str] = []
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.exit_code: int | None = None
        self.exited = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self.exited.is_set()

    def describe(self) -> dict:
        return {'namespace': self.namespace, 'pod': self.pod, 'uid': self.uid, 'container': self.name,
                'container_id': self.cid, 'pid': self.pid, 'alive': self.alive, 'exit_code': self.exit_code,
                'cgroup': self.cgroup, 'log': self.log_path, 'argv': self.argv}


class Agent:
    def __init__(self, *, namespace: str, name: str, uid: str, node: str | None, behaviour: str):
        self.namespace, self.name, self.uid, self.node, self.behaviour = namespace, name, uid, node, behaviour
        self.container: Container | None = None

    def describe(self) -> dict:
        c = self.container
        return {'namespace': self.namespace, 'name': self.name, 'uid': self.uid, 'node': self.node,
                'behaviour': self.behaviour, 'pid': c.pid if c else None, 'alive': bool(c and c.alive),
                'exit_code': c.exit_code if c else None, 'log': c.log_path if c else None,
                'argv': c.argv if c else []}


class Res:
    """A served resource: group/version/plural plus what discovery knows of it."""

    def __init__(self, group: str, version: str, plural: str, kind: str, namespaced: bool):
        self.group, self.version, self.plural, self.kind, self.namespaced = group, version, plural, kind, namespaced
        self.key = kmock.resource(group, version, plural)

    @property
    def api_version(self) -> str:
        return f'{self.group}/{self.version}' if self.group else self.version

    @property
    def qualified(self) -> str:
        return f'{self.plural}.{self.group}' if self.group else self.plural

    def not_found(self, name: str) -> kmock.KubernetesError:
        details = {'name': name, 'kind': self.plural}
        if self.group:
            details['group'] = self.group
        return api_error(404, 'NotFound', f'{self.qualified} "{name}" not found', details)


# --------------------------------------------------------------------------------------------
# The emulator


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with Kubernetes semantics and a local kubelet (see the module docstring)."""

    def __init__(self, scenario: dict, cgroup_root: str):
        super().__init__()
        self.scenario = scenario
        self.cluster = str(scenario.get('cluster', ''))
        self.cgroup_root = cgroup_root
        self.log_dir = os.path.abspath(scenario.get('log_dir') or f'/tmp/mapguard-emulator-{os.getpid()}')
        self.agent_bin = scenario.get('agent_bin')
        self.behaviours: dict[str, str] = dict(scenario.get('agent_behaviour') or {})
        self.rbac_deny: list[dict] = list(scenario.get('rbac_deny') or [])
        self.admission_deny: str | None = scenario.get('admission_deny')
        self.node_names: list[str] = list(scenario.get('nodes') or ['node-a'])
        self.port = 0
        self.rv = 0
        self.history: list[dict] = []  # watch events, oldest first
        self.journal: list[dict] = []
        self.containers: dict[tuple[str, str], Container] = {}  # (pod uid, container name)
        self.agents: list[Agent] = []
        self.tasks: set[asyncio.Task] = set()
        self.created_cgroups: list[str] = []  # in creation order
        self.grace_explicit: dict[str, float] = {}  # pod uid -> terminationGracePeriodSeconds set by the creator
        self.deleting: set[str] = set()  # pod uids being deleted
        self.ds_desired: dict[tuple[str, str], int] = {}
        self.shutting_down = False
        self.resources.load_bundled()  # kmock's list of built-in resources (from a K3s cluster)
        for r in list(self.resources):
            if r.group not in SERVED_GROUPS:  # e.g. metrics.k8s.io also has "pods": kubectl would pick it
                del self.resources[r]
        self.res_index: dict[tuple[str, str, str], Res] = {}
        for r in self.resources:
            info = self.resources[r]
            if r.plural and r.version is not None and r.group is not None:
                self.res_index[(r.group, r.version, r.plural)] = Res(
                    r.group, r.version, r.plural, info.kind or r.plural.capitalize(), bool(info.namespaced))
        # Extra, non-Kubernetes endpoints through kmock's DSL.
        self['get /_emulator/requests'] << (lambda: self.journal)
        self['get /_emulator/agents'] << (lambda: [a.describe() for a in self.agents])
        self['get /_emulator/containers'] << (lambda: [c.describe() for c in self.containers.values()])
        self['get /_emulator/info'] << (lambda: {
            'cluster': self.cluster, 'port': self.port, 'pid': os.getpid(),
            'cgroup_root': self.cgroup_root, 'log_dir': self.log_dir})
        for probe in ('/healthz', '/livez', '/readyz'):
            self[f'get {probe}'] << b'ok'

    # ---- kmock overrides -------------------------------------------------------------------

    async def _serve_server_version(self, request: Any) -> dict:
        return {'major': '1', 'minor': '33', 'gitVersion': 'v1.33.0+mapguard-emulator',
                'gitCommit': '0000000000000000000000000000000000000000', 'gitTreeState': 'clean',
                'buildDate': '2025-04-23T00:00:00Z', 'goVersion': 'go1.24.2', 'compiler': 'gc',
                'platform': 'linux/amd64'}

    # Discovery: kmock's answers name the core group "/v1" and give subresources their parent's short
    # names (kubectl then warns on every short name), so these four render the same data as a real server.
    async def _serve_api(self, request: Any) -> dict:
        return {'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
            {'clientCIDR': '0.0.0.0/0', 'serverAddress': f'{HOST_IP}:{self.port}'}]}

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for (group, version, _) in sorted(self.res_index):
            if group and version not in groups.setdefault(group, []):
                groups[group].append(version)
        return groups

    @staticmethod
    def _api_group(group: str, versions: list[str]) -> dict:
        gvs = [{'groupVersion': f'{group}/{v}', 'version': v} for v in versions]
        return {'name': group, 'versions': gvs, 'preferredVersion': gvs[0]}

    async def _serve_apis(self, request: Any) -> dict:
        groups = self._group_versions()
        order = [g for g in SERVED_GROUPS if g in groups]
        return {'kind': 'APIGroupList', 'apiVersion': 'v1', 'groups': [self._api_group(g, groups[g]) for g in order]}

    async def _serve_group(self, request: Any) -> dict:
        group = request.url.path.strip('/').split('/')[1]
        groups = self._group_versions()
        if group not in groups:
            raise api_error(404, 'NotFound', 'the server could not find the requested resource')
        return {'kind': 'APIGroup', 'apiVersion': 'v1', **self._api_group(group, groups[group])}

    async def _serve_version(self, request: Any) -> dict:
        parts = request.url.path.strip('/').split('/')
        group, version = ('', parts[1]) if parts[0] == 'api' else (parts[1], parts[2] if len(parts) > 2 else '')
        items = sorted(r for r in self.res_index if r[0] == group and r[1] == version)
        if not items:
            raise api_error(404, 'NotFound', 'the server could not find the requested resource')
        resources = []
        for key in items:
            res = self.res_index[key]
            info = self.resources[res.key]
            resources.append({'name': res.plural, 'singularName': info.singular or res.kind.lower(),
                              'namespaced': res.namespaced, 'kind': res.kind, 'verbs': sorted(info.verbs),
                              **({'shortNames': sorted(info.shortnames)} if info.shortnames else {}),
                              **({'categories': sorted(info.categories)} if info.categories else {})})
            for sub in sorted(info.subresources):
                kind, sgroup, sversion = SUBRESOURCE_KINDS.get(sub, (res.kind, None, None))
                entry = {'name': f'{res.plural}/{sub}', 'singularName': '', 'namespaced': res.namespaced,
                         'kind': kind, 'verbs': SUBRESOURCE_VERBS.get(sub, ['get'])}
                if sgroup is not None and (sgroup, sversion) != (group, version):
                    entry['group'], entry['version'] = sgroup, sversion
                resources.append(entry)
        return {'kind': 'APIResourceList', 'apiVersion': 'v1',
                'groupVersion': f'{group}/{version}' if group else version, 'resources': resources}

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError) and exc.reason and ' ' not in exc.reason:
            body = status_body(exc.status, exc.reason, exc.message or '', exc.details)
        elif isinstance(exc, kmock.KubernetesError) and exc.status == 404:
            body = status_body(404, 'NotFound', 'the server could not find the requested resource')
        elif isinstance(exc, kmock.KubernetesError):
            body = status_body(exc.status, 'InternalError', exc.message or repr(exc))
        else:
            log.error('internal error', exc_info=exc)
            body = status_body(500, 'InternalError', f'Internal error occurred: {exc!r}')
        return aiohttp.web.json_response(body, status=body['code'])

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        path = request.url.path
        if path.startswith('/_emulator/'):
            return await kmock.RawHandler._handle(self, request)
        entry = self._journal(request)
        try:
            response = await self._route(request)
        except kmock.KubernetesError as e:
            entry['status'] = e.status
            log.info('%s %s -> %s %s', request.method.value, request.url.path_qs, e.status, e.message)
            raise
        entry['status'] = response.status
        log.info('%s %s -> %s', request.method.value, request.url.path_qs, response.status)
        return response

    def _journal(self, request: Any) -> dict:
        body: Any = None
        if request.body:
            try:
                if 'protobuf' in request.headers.get('Content-Type', '') and 'accessreviews' in request.url.path:
                    body = decode_access_review(request.body)
                else:
                    body = json.loads(request.body)
            except (ValueError, IndexError, UnicodeDecodeError):
                body = None
        query = dict(request.params)
        dry = query.get('dryRun') == 'All' or (isinstance(body, dict) and 'All' in (body.get('dryRun') or []))
        entry = {'method': request.method.value, 'path': request.url.path, 'query': query,
                 'dry_run': bool(dry), 'body': body, 'status': None, 'time': time.time()}
        self.journal.append(entry)
        return entry

    # ---- store ------------------------------------------------------------------------------

    def _get(self, res: Res, ns: str | None, name: str) -> dict | None:
        key = (res.key, ns if res.namespaced else None, name)
        if key in self._objects and not self._objects[key].deleted:
            return copy.deepcopy(self._objects[key].raw)
        return None

    def _list(self, res: Res, ns: str | None) -> list[dict]:
        out = []
        for (r, ons, _), obj in self._objects.items():
            if r == res.key and not obj.deleted and (ns is None or ons == ns):
                out.append(copy.deepcopy(obj.raw))
        out.sort(key=lambda o: (o['metadata'].get('namespace') or '', o['metadata']['name']))
        return out

    async def _commit(self, res: Res, etype: str, obj: dict) -> dict:
        """Store (or delete) one object and publish the watch event; returns the stored copy."""
        async with self._lock:
            return await self._commit_locked(res, etype, obj)

    async def _modify(self, res: Res, ns: str | None, name: str, mutate: Any, uid: str | None = None,
                      etype: str = 'MODIFIED') -> dict | None:
        """Read-modify-write under the store lock; mutate(obj) returning False skips the write."""
        async with self._lock:
            obj = self._get(res, ns, name)
            if obj is None or (uid is not None and obj['metadata']['uid'] != uid):
                return None
            if mutate(obj) is False:
                return None
            return await self._commit_locked(res, etype, obj)

    async def _commit_locked(self, res: Res, etype: str, obj: dict) -> dict:
        meta = obj['metadata']
        key = (res.key, meta.get('namespace') if res.namespaced else None, meta['name'])
        prev = None
        if key in self._objects and not self._objects[key].deleted:
            prev = copy.deepcopy(self._objects[key].raw)
        if etype == 'ADDED' and prev is not None:
            raise api_error(409, 'AlreadyExists', f'{res.qualified} "{meta["name"]}" already exists',
                            {'name': meta['name'], 'kind': res.plural,
                             **({'group': res.group} if res.group else {})})
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj['metadata']['resourceVersion'] = str(self.rv)
        if etype == 'DELETED':
            if key in self._objects:
                self._objects[key].delete()
        elif key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj
        event = {'rv': self.rv, 'res': res.key, 'type': etype, 'object': obj, 'prev': prev}
        self.history.append(event)
        if len(self.history) > HISTORY_LIMIT:
            del self.history[:len(self.history) - HISTORY_LIMIT]
        await self._buses[res.key].put(event)
        return copy.deepcopy(obj)

    def res(self, group: str, version: str, plural: str) -> Res:
        return self.res_index[(group, version, plural)]

    # ---- routing ----------------------------------------------------------------------------

    async def _route(self, request: Any) -> aiohttp.web.StreamResponse:
        parsed = self._parse_path(request.url.path)
        if parsed is None:
            return await kmock.RawHandler._handle(self, request)  # discovery, /version, 404
        group, version, ns, plural, name, sub = parsed
        res = self.res_index.get((group, version, plural))
        if res is None:
            raise api_error(404, 'NotFound', 'the server could not find the requested resource')
        if not res.namespaced and ns is not None:
            raise api_error(404, 'NotFound', 'the server could not find the requested resource')
        if res.namespaced and ns is None and name is not None:
            raise api_error(404, 'NotFound', 'the server could not find the requested resource')
        params = request.params
        method = request.method.value.upper()
        watching = method == 'GET' and truthy(params.get('watch'))
        verb = {
            'GET': 'watch' if watching else ('get' if name else 'list'),
            'POST': 'create', 'PUT': 'update', 'PATCH': 'patch',
            'DELETE': 'delete' if name else 'deletecollection',
        }.get(method)
        if verb is None:
            raise api_error(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')

        if group == 'authorization.k8s.io' and plural.endswith('reviews'):
            if verb != 'create':
                raise api_error(405, 'MethodNotAllowed',
                                'the server does not allow this method on the requested resource')
            return await self._access_review(request, res, ns)

        self._authorize(verb, res, ns, name, sub)
        body = self._body(request) if method in ('POST', 'PUT', 'PATCH', 'DELETE') else None

        if sub == 'log' and res.plural == 'pods' and verb == 'get':
            return await self._serve_log(request, res, ns, name)
        if sub not in (None, 'status'):
            raise api_error(404, 'NotFound', 'the server could not find the requested resource')
        if sub == 'status' and verb not in ('get', 'update', 'patch'):
            raise api_error(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')
        if verb == 'watch':
            return await self._serve_watch_stream(request, res, ns, name)
        if verb == 'list':
            return self._serve_list_objects(request, res, ns)
        if verb == 'get':
            obj = self._get(res, ns, name)
            if obj is None:
                raise res.not_found(name)
            if self._wants_table(request, res):
                return aiohttp.web.json_response(self._table(res, [obj], obj['metadata']['resourceVersion'],
                                                             request.params.get('includeObject')))
            return aiohttp.web.json_response(obj)
        if verb == 'create':
            if name is not None or (res.namespaced and ns is None):
                raise api_error(405, 'MethodNotAllowed',
                                'the server does not allow this method on the requested resource')
            return await self._create(request, res, ns, body)
        if verb in ('update', 'patch'):
            return await self._update(request, res, ns, name, sub, body, verb)
        if verb == 'delete':
            return await self._delete(request, res, ns, name, body)
        return await self._delete_collection(request, res, ns, body)

    @staticmethod
    def _parse_path(path: str) -> tuple[str, str, str | None, str, str | None, str | None] | None:
        parts = [p for p in path.split('/') if p]
        if len(parts) >= 3 and parts[0] == 'api':
            group, version, rest = '', parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == 'apis':
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        ns = None
        if rest[0] == 'namespaces' and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ('status', 'finalize')):
            ns, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = '/'.join(rest[2:]) or None
        return group, version, ns, plural, name, sub

    @staticmethod
    def _body(request: Any) -> Any:
        if not request.body:
            return None
        ctype = request.headers.get('Content-Type', 'application/json').split(';')[0].strip().lower()
        if 'json' not in ctype and 'yaml' not in ctype:
            # e.g. protobuf (only access reviews decode it, see _access_review), or curl's form default
            raise api_error(415, 'UnsupportedMediaType', 'the body of the request was in an unknown format - '
                                                         'accepted media types include: application/json, '
                                                         'application/yaml')
        try:
            return json.loads(request.body)
        except ValueError:
            pass
        try:
            import yaml  # only for apply-patch+yaml with real YAML; kube-rs and kubectl send JSON
            return yaml.safe_load(request.body)
        except Exception:
            raise api_error(400, 'BadRequest', 'the body of the request was in an unknown format - '
                                               'accepted media types include: application/json, application/yaml')

    # ---- RBAC -------------------------------------------------------------------------------

    def _denied_by(self, attrs: dict) -> int | None:
        for i, rule in enumerate(self.rbac_deny):
            if all(key not in rule or rule[key] in ('*', attrs.get(key) or '')
                   for key in ('verb', 'resource', 'subresource', 'namespace', 'group', 'name')):
                return i
        return None

    def _authorize(self, verb: str, res: Res, ns: str | None, name: str | None, sub: str | None) -> None:
        attrs = {'verb': verb, 'resource': res.plural, 'subresource': sub or '', 'namespace': ns or '',
                 'group': res.group, 'name': name or ''}
        if self._denied_by(attrs) is None:
            return
        resource = res.plural + (f'/{sub}' if sub else '')
        what = f'{res.qualified} "{name}"' if name else res.qualified
        where = f'in the namespace "{ns}"' if ns else 'at the cluster scope'
        message = (f'{what} is forbidden: User "{USER}" cannot {verb} resource "{resource}" '
                   f'in API group "{res.group}" {where}')
        details = {'kind': res.plural}
        if name:
            details['name'] = name
        if res.group:
            details['group'] = res.group
        raise api_error(403, 'Forbidden', message, details)

    async def _access_review(self, request: Any, res: Res, ns: str | None) -> aiohttp.web.StreamResponse:
        if 'protobuf' in request.headers.get('Content-Type', ''):
            try:
                body = decode_access_review(request.body)  # answered in JSON, which kubectl also accepts
            except (ValueError, IndexError, UnicodeDecodeError) as e:
                raise api_error(400, 'BadRequest', f'cannot decode the protobuf body: {e}')
        else:
            body = self._body(request)
        if not isinstance(body, dict):
            raise api_error(400, 'BadRequest', 'the body of the request was in an unknown format')
        review = copy.deepcopy(body)
        review['apiVersion'] = res.api_version
        review['kind'] = res.kind
        review['metadata'] = {**(review.get('metadata') or {}), 'creationTimestamp': None}
        spec = review.get('spec') or {}
        if res.plural == 'selfsubjectrulesreviews':
            review['status'] = {'resourceRules': [{'verbs': ['*'], 'apiGroups': ['*'], 'resources': ['*']}],
                                'nonResourceRules': [{'verbs': ['*'], 'nonResourceURLs': ['*']}],
                                'incomplete': False}
            return aiohttp.web.json_response(review, status=201)
        attrs = spec.get('resourceAttributes')
        if attrs is not None:
            attrs = {**attrs}
            if res.plural == 'localsubjectaccessreviews' and ns:
                attrs['namespace'] = ns
            rule = self._denied_by(attrs)
        else:
            rule = None  # nonResourceAttributes: always allowed
        if rule is None:
            review['status'] = {'allowed': True, 'reason': f'RBAC: allowed by ClusterRoleBinding "cluster-admin" '
                                                            f'of ClusterRole "cluster-admin" to User "{USER}"'}
        else:
            what = (f'{attrs.get("verb", "")} {attrs.get("resource", "")}'
                    + (f'/{attrs["subresource"]}' if attrs.get('subresource') else ''))
            where = f' in namespace "{attrs["namespace"]}"' if attrs.get('namespace') else ''
            review['status'] = {'allowed': False,
                                'reason': f'RBAC: no rule allows {what}{where} (emulator rbac_deny[{rule}])'}
        log.info('access review %s -> allowed=%s', attrs, review['status']['allowed'])
        return aiohttp.web.json_response(review, status=201)

    # ---- list / watch -----------------------------------------------------------------------

    def _selectors(self, request: Any, res: Res) -> tuple[list, list]:
        try:
            return (parse_label_selector(request.params.get('labelSelector')),
                    parse_field_selector(request.params.get('fieldSelector'), res.plural))
        except SelectorError as e:
            raise api_error(400, 'BadRequest', str(e))

    # ---- Table output (what kubectl asks for, to print its columns) -----------------------

    @staticmethod
    def _wants_table(request: Any, res: Res) -> bool:
        return res.plural == 'pods' and 'as=Table' in request.headers.get('Accept', '')

    @staticmethod
    def _age(ts: str | None) -> str:
        if not ts:
            return '<unknown>'
        then = datetime.datetime.strptime(ts, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=datetime.UTC)
        secs = max(0, int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds()))
        if secs < 120:
            return f'{secs}s'
        if secs < 600:
            return f'{secs // 60}m{secs % 60}s' if secs % 60 else f'{secs // 60}m'
        if secs < 3 * 3600:
            return f'{secs // 60}m'
        return f'{secs // 3600}h'

    @staticmethod
    def _pod_status_text(pod: dict) -> str:
        st = pod.get('status') or {}
        reason = st.get('reason') or st.get('phase') or 'Unknown'
        for cs in st.get('containerStatuses') or []:
            state = cs.get('state') or {}
            if state.get('waiting', {}).get('reason'):
                reason = state['waiting']['reason']
            elif state.get('terminated', {}).get('reason') and st.get('reason') is None:
                reason = state['terminated']['reason']
        for cond in st.get('conditions') or []:
            if cond.get('type') == 'PodScheduled' and cond.get('status') == 'False' and st.get('phase') == 'Pending':
                reason = 'Pending'
        if pod['metadata'].get('deletionTimestamp'):
            reason = 'Terminating'
        return reason

    def _table(self, res: Res, objs: list[dict], rv: str, include: str | None) -> dict:
        columns = [('Name', 'string', 'name', 0), ('Ready', 'string', '', 0), ('Status', 'string', '', 0),
                   ('Restarts', 'string', '', 0), ('Age', 'string', '', 0), ('IP', 'string', '', 1),
                   ('Node', 'string', '', 1), ('Nominated Node', 'string', '', 1), ('Readiness Gates', 'string', '', 1)]
        rows = []
        for pod in objs:
            st = pod.get('status') or {}
            statuses = st.get('containerStatuses') or []
            ready = sum(1 for c in statuses if c.get('ready'))
            total = len(pod['spec'].get('containers') or [])
            cells = [pod['metadata']['name'], f'{ready}/{total}', self._pod_status_text(pod),
                     str(sum(c.get('restartCount', 0) for c in statuses)),
                     self._age(pod['metadata'].get('creationTimestamp')), st.get('podIP') or '<none>',
                     pod['spec'].get('nodeName') or '<none>', '<none>', '<none>']
            if include == 'Object':
                obj = pod
            elif include == 'None':
                obj = None
            else:
                obj = {'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1', 'metadata': pod['metadata']}
            rows.append({'cells': cells, 'object': obj})
        return {'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {'resourceVersion': rv},
                'columnDefinitions': [{'name': n, 'type': t, 'format': f, 'description': n, 'priority': p}
                                      for n, t, f, p in columns],
                'rows': rows}

    def _list_kind(self, res: Res) -> str:
        return f'{res.kind}List'

    def _serve_list_objects(self, request: Any, res: Res, ns: str | None) -> aiohttp.web.StreamResponse:
        lsel, fsel = self._selectors(request, res)
        items = [o for o in self._list(res, ns)
                 if labels_match(lsel, o['metadata'].get('labels')) and fields_match(fsel, o)]
        rv = str(self.rv)
        meta: dict[str, Any] = {'resourceVersion': rv}
        offset = 0
        token = request.params.get('continue')
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                offset, rv = int(state['offset']), str(state['rv'])
                meta['resourceVersion'] = rv
            except Exception:
                raise api_error(400, 'BadRequest', 'continue key is not valid: incorrect encoded start resourceVersion')
        limit = request.params.get('limit')
        page = items[offset:]
        if limit and limit.isdigit() and int(limit) > 0 and len(page) > int(limit):
            page = page[:int(limit)]
            nxt = {'offset': offset + int(limit), 'rv': rv}
            meta['continue'] = base64.urlsafe_b64encode(json.dumps(nxt).encode()).decode()
            meta['remainingItemCount'] = len(items) - offset - int(limit)
        if self._wants_table(request, res):
            table = self._table(res, page, rv, request.params.get('includeObject'))
            table['metadata'] = meta
            return aiohttp.web.json_response(table)
        return aiohttp.web.json_response({'apiVersion': res.api_version, 'kind': self._list_kind(res),
                                          'metadata': meta, 'items': page})

    def _translate(self, event: dict, ns: str | None, name: str | None, lsel: list, fsel: list) -> dict | None:
        obj, prev = event['object'], event['prev']

        def ok(o: dict | None) -> bool:
            if o is None:
                return False
            m = o['metadata']
            return ((ns is None or m.get('namespace') == ns) and (name is None or m.get('name') == name)
                    and labels_match(lsel, m.get('labels')) and fields_match(fsel, o))

        now_ok = ok(obj)
        if event['type'] == 'ADDED':
            return {'type': 'ADDED', 'object': obj} if now_ok else None
        if event['type'] == 'DELETED':
            return {'type': 'DELETED', 'object': obj} if now_ok else None
        was_ok = ok(prev)
        if now_ok and was_ok:
            return {'type': 'MODIFIED', 'object': obj}
        if now_ok:
            return {'type': 'ADDED', 'object': obj}
        if was_ok:
            return {'type': 'DELETED', 'object': obj}
        return None

    async def _serve_watch_stream(self, request: Any, res: Res, ns: str | None,
                                  name: str | None) -> aiohttp.web.StreamResponse:
        lsel, fsel = self._selectors(request, res)
        params = request.params
        rv_param = params.get('resourceVersion') or ''
        send_initial = truthy(params.get('sendInitialEvents'))
        timeout = params.get('timeoutSeconds')
        timeout_s = float(timeout) if timeout and re.fullmatch(r'\d+', timeout) else None
        bus = self._buses[res.key]
        marker = await bus.mark()
        try:
            initial: list[dict] = []
            if rv_param in ('', '0') or send_initial:
                for obj in self._list(res, ns):
                    ev = self._translate({'type': 'ADDED', 'object': obj, 'prev': None}, ns, name, lsel, fsel)
                    if ev:
                        initial.append(ev)
            else:
                if not rv_param.isdigit():
                    raise api_error(400, 'BadRequest', f'invalid resource version: {rv_param}')
                start = int(rv_param)
                oldest = self.history[0]['rv'] if self.history else self.rv + 1
                if start < oldest - 1 and len(self.history) >= HISTORY_LIMIT:
                    # Like the watch cache: 200, then one ERROR event carrying a 410 Status, then the end.
                    gone = aiohttp.web.StreamResponse(status=200, headers={'Content-Type': 'application/json'})
                    await gone.prepare(request._raw_request)
                    status = status_body(410, 'Expired', f'too old resource version: {start} ({oldest - 1})')
                    await gone.write(json.dumps({'type': 'ERROR', 'object': status}).encode() + b'\n')
                    await gone.write_eof()
                    return gone
                for event in self.history:
                    if event['rv'] > start and event['res'] == res.key:
                        ev = self._translate(event, ns, name, lsel, fsel)
                        if ev:
                            initial.append(ev)
            seen_rv = self.rv
            table = self._wants_table(request, res)
            include = request.params.get('includeObject')

            def encode(ev: dict) -> bytes:
                if table and ev['type'] != 'BOOKMARK':
                    ev = {'type': ev['type'], 'object': self._table(
                        res, [ev['object']], ev['object']['metadata'].get('resourceVersion', ''), include)}
                return json.dumps(ev).encode() + b'\n'
            response = aiohttp.web.StreamResponse(status=200, headers={'Content-Type': 'application/json'})
            response.enable_chunked_encoding()
            await response.prepare(request._raw_request)
            for ev in initial:
                await response.write(encode(ev))
            if send_initial:
                bookmark = {'type': 'BOOKMARK', 'object': {
                    'apiVersion': res.api_version, 'kind': res.kind,
                    'metadata': {'resourceVersion': str(seen_rv),
                                 'annotations': {'k8s.io/initial-events-end': 'true'}}}}
                await response.write(json.dumps(bookmark).encode() + b'\n')
            try:
                async with asyncio.timeout(timeout_s):
                    async for event in bus.stream(since=marker):
                        if event.get('stop'):
                            break  # the emulator is stopping: end the stream cleanly
                        if event['rv'] <= seen_rv:
                            continue
                        ev = self._translate(event, ns, name, lsel, fsel)
                        if ev:
                            await response.write(encode(ev))
            except TimeoutError:
                pass
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                return response
            await response.write_eof()
            return response
        finally:
            await bus.unmark(marker)

    # ---- create -----------------------------------------------------------------------------

    def _namespace_exists(self, ns: str) -> bool:
        return self._get(self.res('', 'v1', 'namespaces'), None, ns) is not None

    async def _create(self, request: Any, res: Res, ns: str | None, body: Any) -> aiohttp.web.StreamResponse:
        dry_run = request.params.get('dryRun') == 'All'
        if not isinstance(body, dict):
            raise api_error(400, 'BadRequest', 'the body of the request was in an unknown format')
        obj = copy.deepcopy(body)
        if obj.get('apiVersion') not in (None, res.api_version):
            raise api_error(400, 'BadRequest', f'the API version in the data ({obj["apiVersion"]}) does not match '
                                               f'the expected API version ({res.api_version})')
        if obj.get('kind') not in (None, res.kind):
            raise api_error(400, 'BadRequest', f'the kind in the data ({obj["kind"]}) does not match the expected '
                                               f'kind ({res.kind})')
        obj['apiVersion'], obj['kind'] = res.api_version, res.kind
        meta = obj.setdefault('metadata', {})
        if res.namespaced:
            if meta.get('namespace') not in (None, '', ns):
                raise api_error(400, 'BadRequest', 'the namespace of the provided object does not match the '
                                                   'namespace sent on the request')
            meta['namespace'] = ns
            if not self._namespace_exists(ns):
                raise api_error(404, 'NotFound', f'namespaces "{ns}" not found', {'name': ns, 'kind': 'namespaces'})
        else:
            meta.pop('namespace', None)
        if not meta.get('name') and meta.get('generateName'):
            alphabet = 'bcdfghjklmnpqrstvwxz2456789'
            meta['name'] = meta['generateName'] + ''.join(secrets.choice(alphabet) for _ in range(5))
        name = meta.get('name') or ''

        if res.plural == 'pods':
            labels = meta.get('labels') or {}
            if self.admission_deny and labels.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE:
                message = self.admission_deny.replace('{name}', name).replace('{namespace}', ns or '')
                raise api_error(403, 'Forbidden', message, {'name': name, 'kind': 'pods'})
        self._validate(res, obj)
        if self._get(res, ns, name) is not None:  # checked again under the store lock when stored
            raise api_error(409, 'AlreadyExists', f'{res.qualified} "{name}" already exists',
                            {'name': name, 'kind': res.plural, **({'group': res.group} if res.group else {})})

        meta['uid'] = str(uuid.uuid4())
        meta['creationTimestamp'] = now_ts()
        for k in ('resourceVersion', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'managedFields'):
            meta.pop(k, None)
        if res.group in ('apps', 'batch'):
            meta['generation'] = 1
        explicit_grace = None
        if res.plural == 'pods':
            explicit_grace = (obj.get('spec') or {}).get('terminationGracePeriodSeconds')
            self._default_pod(obj)
        elif res.plural == 'namespaces':
            obj.setdefault('spec', {'finalizers': ['kubernetes']})
            obj['status'] = {'phase': 'Active'}
            meta.setdefault('labels', {})['kubernetes.io/metadata.name'] = name

        if dry_run:
            log.info('dry-run create %s %s/%s: not stored', res.plural, ns, name)
            return aiohttp.web.json_response(obj, status=201)

        if explicit_grace is not None:
            self.grace_explicit[meta['uid']] = float(explicit_grace)
        stored = await self._commit(res, 'ADDED', obj)
        if res.plural == 'pods':
            self._spawn(self._kubelet(ns, name, meta['uid']))
        return aiohttp.web.json_response(stored, status=201)

    def _validate(self, res: Res, obj: dict) -> None:
        name = obj['metadata'].get('name') or ''
        errors = []
        if not name:
            errors.append(('metadata.name', 'Required value: name or generateName is required'))
        elif not NAME_RE.fullmatch(name) or len(name) > 253:
            errors.append(('metadata.name', f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist '
                                            'of lower case alphanumeric characters, \'-\' or \'.\''))
        if res.plural == 'pods':
            containers = (obj.get('spec') or {}).get('containers')
            if not containers:
                errors.append(('spec.containers', 'Required value'))
            for i, c in enumerate(containers or []):
                if not isinstance(c, dict) or not c.get('name'):
                    errors.append((f'spec.containers[{i}].name', 'Required value'))
                if not isinstance(c, dict) or not c.get('image'):
                    errors.append((f'spec.containers[{i}].image', 'Required value'))
        if errors:
            text = ', '.join(f'{f}: {m}' for f, m in errors)
            message = f'{res.kind} "{name}" is invalid: {text}' if len(errors) == 1 else \
                f'{res.kind} "{name}" is invalid: [{text}]'
            causes = [{'reason': 'FieldValueRequired' if 'Required' in m else 'FieldValueInvalid',
                       'message': m, 'field': f} for f, m in errors]
            raise api_error(422, 'Invalid', message, {'name': name, 'kind': res.kind, 'causes': causes})

    @staticmethod
    def _default_pod(pod: dict) -> None:
        spec = pod.setdefault('spec', {})
        spec.setdefault('restartPolicy', 'Always')
        spec.setdefault('terminationGracePeriodSeconds', 30)
        spec.setdefault('dnsPolicy', 'ClusterFirst')
        spec.setdefault('schedulerName', 'default-scheduler')
        spec.setdefault('serviceAccountName', spec.get('serviceAccount') or 'default')
        spec.setdefault('serviceAccount', spec['serviceAccountName'])
        spec.setdefault('securityContext', {})
        spec.setdefault('enableServiceLinks', True)
        spec.setdefault('priority', 0)
        for c in spec.get('containers') or []:
            image = c.get('image') or ''
            tagged = ':' in image.rsplit('/', 1)[-1] or '@' in image
            c.setdefault('imagePullPolicy', 'IfNotPresent' if tagged and not image.endswith(':latest') else 'Always')
            c.setdefault('terminationMessagePath', '/dev/termination-log')
            c.setdefault('terminationMessagePolicy', 'File')
            c.setdefault('resources', {})
        pod['status'] = {'phase': 'Pending', 'qosClass': 'BestEffort'}

    # ---- update / patch ---------------------------------------------------------------------

    async def _update(self, request: Any, res: Res, ns: str | None, name: str, sub: str | None, body: Any,
                      verb: str) -> aiohttp.web.StreamResponse:
        dry_run = request.params.get('dryRun') == 'All'
        ctype = request.headers.get('Content-Type', '')
        result: dict = {}

        def apply(current: dict) -> bool:
            if verb == 'update':
                if not isinstance(body, dict):
                    raise api_error(400, 'BadRequest', 'the body of the request was in an unknown format')
                given_rv = (body.get('metadata') or {}).get('resourceVersion')
                if given_rv and given_rv != current['metadata']['resourceVersion']:
                    raise api_error(409, 'Conflict', f'Operation cannot be fulfilled on {res.qualified} "{name}": '
                                                     'the object has been modified; please apply your changes to '
                                                     'the latest version and try again',
                                    {'name': name, 'kind': res.plural})
                new = copy.deepcopy(body) if sub is None else {**current, 'status': body.get('status')}
            else:
                try:
                    if 'json-patch' in ctype:
                        new = jsonpatch.apply_patch(current, body if isinstance(body, list) else [])
                    else:
                        patch = body if isinstance(body, dict) else {}
                        if sub == 'status':
                            patch = {'status': patch.get('status')} if 'status' in patch else {}
                        new = merge_patch(current, patch)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                    raise api_error(422, 'Invalid', f'{res.kind} "{name}" is invalid: {e}')
            # Identity fields cannot change.
            new['apiVersion'], new['kind'] = res.api_version, res.kind
            meta = new.setdefault('metadata', {})
            for k in ('name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp',
                      'deletionGracePeriodSeconds', 'resourceVersion'):
                if k in current['metadata']:
                    meta[k] = current['metadata'][k]
                else:
                    meta.pop(k, None)
            if sub is None and 'status' in current and verb == 'update':
                new['status'] = current['status']
            if 'generation' in current['metadata'] and new.get('spec') != current.get('spec'):
                meta['generation'] = current['metadata']['generation'] + 1
            result['new'] = new
            if dry_run:
                return False
            current.clear()
            current.update(new)
            return True

        stored = await self._modify(res, ns, name, apply)
        if 'new' not in result:
            raise res.not_found(name)
        return aiohttp.web.json_response(stored if stored is not None else result['new'])

    # ---- delete -----------------------------------------------------------------------------

    def _delete_options(self, request: Any, body: Any) -> tuple[float | None, dict, bool]:
        opts = body if isinstance(body, dict) else {}
        grace = request.params.get('gracePeriodSeconds', opts.get('gracePeriodSeconds'))
        dry = request.params.get('dryRun') == 'All' or 'All' in (opts.get('dryRun') or [])
        try:
            grace_f = None if grace is None else max(0.0, float(grace))
        except (TypeError, ValueError):
            raise api_error(400, 'BadRequest', f'invalid gracePeriodSeconds: {grace!r}')
        return grace_f, opts.get('preconditions') or {}, dry

    async def _delete(self, request: Any, res: Res, ns: str | None, name: str, body: Any) -> aiohttp.web.StreamResponse:
        grace, pre, dry = self._delete_options(request, body)
        obj = self._get(res, ns, name)
        if obj is None:
            raise res.not_found(name)
        if pre.get('uid') and pre['uid'] != obj['metadata']['uid']:
            raise api_error(409, 'Conflict', f'Operation cannot be fulfilled on {res.qualified} "{name}": Precondition '
                                             f'failed: UID in precondition: {pre["uid"]}, UID in object meta: '
                                             f'{obj["metadata"]["uid"]}', {'name': name, 'kind': res.plural})
        if pre.get('resourceVersion') and pre['resourceVersion'] != obj['metadata']['resourceVersion']:
            raise api_error(409, 'Conflict', f'Operation cannot be fulfilled on {res.qualified} "{name}": Precondition '
                                             f'failed: ResourceVersion in precondition: {pre["resourceVersion"]}, '
                                             f'ResourceVersion in object meta: {obj["metadata"]["resourceVersion"]}',
                            {'name': name, 'kind': res.plural})
        if dry:
            return aiohttp.web.json_response(obj)
        result = await self._delete_object(res, obj, grace)
        return aiohttp.web.json_response(result)

    async def _delete_object(self, res: Res, obj: dict, grace: float | None) -> dict:
        ns, name, uid = obj['metadata'].get('namespace'), obj['metadata']['name'], obj['metadata']['uid']
        if res.plural != 'pods':
            final = await self._modify(res, ns, name, lambda o: None, uid=uid, etype='DELETED')
            if final is None:
                raise res.not_found(name)
            return final
        live = [c for c in self._pod_containers(uid) if c.alive]
        if not live:
            self.deleting.add(uid)
            final = await self._modify(res, ns, name, lambda o: None, uid=uid, etype='DELETED')
            self._remove_pod_cgroups(uid)
            if final is None:
                raise res.not_found(name)
            return final
        if uid in self.deleting:
            return self._get(res, ns, name) or obj  # already terminating: the object as it is
        self.deleting.add(uid)
        if grace is None:
            grace = self.grace_explicit.get(uid, DEFAULT_GRACE)

        def mark(o: dict) -> None:
            o['metadata']['deletionTimestamp'] = ts_after(grace)
            o['metadata']['deletionGracePeriodSeconds'] = int(grace)
        marked = await self._modify(res, ns, name, mark, uid=uid)
        log.info('deleting pod %s/%s: SIGTERM, SIGKILL after %ss', ns, name, grace)
        self._spawn(self._finish_delete(res, ns, name, uid, live, grace))
        if grace == 0:
            await asyncio.sleep(0)  # let the SIGKILL go out first
        return marked or obj

    async def _finish_delete(self, res: Res, ns: str, name: str, uid: str, live: list[Container], grace: float) -> None:
        await asyncio.gather(*(self._stop(c, grace) for c in live))
        await asyncio.sleep(0.05)  # let the container watchers publish the terminated status
        await self._modify(res, ns, name, lambda o: None, uid=uid, etype='DELETED')
        self._remove_pod_cgroups(uid)

    async def _delete_collection(self, request: Any, res: Res, ns: str | None, body: Any) -> aiohttp.web.StreamResponse:
        if res.namespaced and ns is None:
            raise api_error(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')
        grace, _, dry = self._delete_options(request, body)
        lsel, fsel = self._selectors(request, res)
        items = [o for o in self._list(res, ns)
                 if labels_match(lsel, o['metadata'].get('labels')) and fields_match(fsel, o)]
        out = []
        for obj in items:
            out.append(obj if dry else await self._delete_object(res, obj, grace))
        return aiohttp.web.json_response({'apiVersion': res.api_version, 'kind': self._list_kind(res),
                                          'metadata': {'resourceVersion': str(self.rv)}, 'items': out})

    # ---- logs -------------------------------------------------------------------------------

    async def _serve_log(self, request: Any, res: Res, ns: str, name: str) -> aiohttp.web.StreamResponse:
        pod = self._get(res, ns, name)
        if pod is None:
            raise res.not_found(name)
        params = request.params
        names = [c.get('name') for c in pod['spec'].get('containers') or []]
        cname = params.get('container')
        if not cname:
            if len(names) != 1:
                raise api_error(400, 'BadRequest', f'a container name must be specified for pod {name}, '
                                                   f'choose one of: [{" ".join(names)}]')
            cname = names[0]
        if cname not in names:
            raise api_error(400, 'BadRequest', f'container {cname} is not valid for pod {name}')
        if truthy(params.get('previous')):
            raise api_error(400, 'BadRequest', f'previous terminated container "{cname}" in pod "{name}" not found')
        uid = pod['metadata']['uid']
        ctr = self.containers.get((uid, cname))
        if not pod['spec'].get('nodeName'):
            return aiohttp.web.Response(body=b'', content_type='text/plain')  # not bound to a node: empty
        if ctr is None or ctr.proc is None:
            state: dict = {}
            for cs in pod['status'].get('containerStatuses') or []:
                if cs.get('name') == cname:
                    state = cs.get('state') or {}
            if 'terminated' in state or 'running' in state:
                return aiohttp.web.Response(body=b'', content_type='text/plain')  # ran without a process here
            waiting = state.get('waiting') or {}
            reason = waiting.get('reason') or 'ContainerCreating'
            text = {'ErrImagePull': "image can't be pulled",
                    'ImagePullBackOff': 'trying and failing to pull image'}.get(reason, reason)
            raise api_error(400, 'BadRequest', f'container "{cname}" in pod "{name}" is waiting to start: {text}')
        follow = truthy(params.get('follow'))
        stamps = truthy(params.get('timestamps'))
        tail = params.get('tailLines')
        tail_n = int(tail) if tail and re.fullmatch(r'\d+', tail) else None
        limit = params.get('limitBytes')
        limit_n = int(limit) if limit and re.fullmatch(r'\d+', limit) else None

        def prefix(lines: list[bytes]) -> bytes:
            if stamps:
                return b''.join(nano_ts().encode() + b' ' + ln for ln in lines)
            return b''.join(lines)

        def split(data: bytes) -> list[bytes]:
            lines = [ln + b'\n' for ln in data.split(b'\n')]
            lines[-1] = lines[-1][:-1]
            return [ln for ln in lines if ln]

        try:
            with open(ctr.log_path, 'rb') as f:
                data = f.read()
        except FileNotFoundError:
            data = b''
        offset = len(data)
        if tail_n is not None:
            data = b''.join(split(data)[-tail_n:]) if tail_n else b''
        if not follow:
            out = prefix(split(data))
            return aiohttp.web.Response(body=out[:limit_n] if limit_n is not None else out,
                                        content_type='text/plain')

        response = aiohttp.web.StreamResponse(status=200, headers={'Content-Type': 'text/plain'})
        response.enable_chunked_encoding()
        await response.prepare(request._raw_request)
        sent = 0

        async def send(chunk: bytes) -> bool:
            nonlocal sent
            if limit_n is not None:
                chunk = chunk[:max(0, limit_n - sent)]
            if chunk:
                await response.write(chunk)
                sent += len(chunk)
            return limit_n is None or sent < limit_n

        pending = b''
        breaks = self.behaviours.get(pod['spec'].get('nodeName') or '') == 'log_break'
        lines_sent = 0

        async def send_line(line: bytes) -> bool:
            nonlocal lines_sent
            if breaks and lines_sent == 1:
                raise BrokenStream()
            lines_sent += 1
            return await send(prefix([line]))

        try:
            for line in split(data):
                if not line.endswith(b'\n'):
                    pending = line
                elif not await send_line(line):
                    return response
            while True:
                exited = ctr.exited.is_set()
                try:
                    with open(ctr.log_path, 'rb') as f:
                        f.seek(offset)
                        chunk = f.read()
                except FileNotFoundError:
                    chunk = b''
                offset += len(chunk)
                pending += chunk
                *complete, pending = pending.split(b'\n')
                for line in complete:
                    if not await send_line(line + b'\n'):
                        return response
                gone = (self._get(res, ns, name) or {}).get('metadata', {}).get('uid') != uid
                if exited or gone or self.shutting_down:
                    if pending:
                        await send(prefix([pending]))
                    break
                await asyncio.sleep(0.05)
            await response.write_eof()
        except BrokenStream:
            # No last chunk: the client sees the body end mid-stream.
            transport = request._raw_request.transport
            if transport is not None:
                transport.abort()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        return response

    # ---- kubelet ----------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error('background task failed', exc_info=task.exception())

    def _pod_containers(self, uid: str) -> list[Container]:
        return [c for (u, _), c in self.containers.items() if u == uid]

    async def _update_pod(self, ns: str, name: str, uid: str, mutate: Any) -> dict | None:
        stored = await self._modify(self.res('', 'v1', 'pods'), ns, name, mutate, uid=uid)
        await self._refresh_workloads(ns)
        return stored

    def _node_for(self, pod: dict) -> str | None:
        spec = pod['spec']
        if spec.get('nodeName'):
            return spec['nodeName']
        host = (spec.get('nodeSelector') or {}).get('kubernetes.io/hostname')
        if host:
            return host
        terms = (((spec.get('affinity') or {}).get('nodeAffinity') or {})
                 .get('requiredDuringSchedulingIgnoredDuringExecution') or {}).get('nodeSelectorTerms') or []
        for term in terms:
            for expr in (term.get('matchFields') or []) + (term.get('matchExpressions') or []):
                if expr.get('key') in ('metadata.name', 'kubernetes.io/hostname') and expr.get('operator') == 'In':
                    for value in expr.get('values') or []:
                        return value
        return self.node_names[0] if self.node_names else None

    async def _kubelet(self, ns: str, name: str, uid: str) -> None:
        """Admit a pod created through the API and drive its status like a kubelet."""
        pod = self._get(self.res('', 'v1', 'pods'), ns, name)
        if pod is None:
            return
        labels = pod['metadata'].get('labels') or {}
        is_agent = labels.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE
        node = self._node_for(pod)
        behaviour = self.behaviours.get(node or '', 'normal') if is_agent else 'workload'
        agent = None
        if is_agent:
            agent = Agent(namespace=ns, name=name, uid=uid, node=node, behaviour=behaviour)
            self.agents.append(agent)
            if pod['spec'].get('restartPolicy') != 'Never':
                log.warning('pod %s/%s has restartPolicy %s: treated as Never', ns, name,
                            pod['spec'].get('restartPolicy'))
        await asyncio.sleep(0.05)
        log.info('kubelet: pod %s/%s on %s: %s', ns, name, node, behaviour)

        if behaviour == 'unschedulable':
            def unschedulable(p: dict) -> None:
                p['status'] = {'phase': 'Pending', 'qosClass': 'BestEffort', 'conditions': [{
                    'type': 'PodScheduled', 'status': 'False', 'lastProbeTime': None,
                    'lastTransitionTime': now_ts(), 'reason': 'Unschedulable', 'message': UNSCHEDULABLE_MESSAGE}]}
            await self._update_pod(ns, name, uid, unschedulable)
            return

        started = now_ts()
        containers = pod['spec']['containers']

        def bind(p: dict) -> None:
            p['spec']['nodeName'] = node
            p['status'] = {
                'phase': 'Pending', 'qosClass': 'BestEffort', 'hostIP': HOST_IP, 'hostIPs': [{'ip': HOST_IP}],
                'startTime': started,
                'conditions': self._conditions(scheduled=True, ready=False, reason='ContainersNotReady'),
                'containerStatuses': [self._waiting_status(c, 'ContainerCreating') for c in containers],
            }
        if await self._update_pod(ns, name, uid, bind) is None:
            return
        deadline = pod['spec'].get('activeDeadlineSeconds')
        if deadline is not None:
            self._spawn(self._deadline(ns, name, uid, float(deadline)))

        if behaviour == 'image_pull_error':
            image = containers[0].get('image', '')
            message = (f'failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and unpack '
                       f'image "{image}": failed to resolve reference "{image}": {image}: not found')

            def pull_error(reason: str, msg: str) -> Any:
                def mutate(p: dict) -> None:
                    if p['status'].get('phase') == 'Pending':
                        p['status']['containerStatuses'] = [
                            self._waiting_status(c, reason, msg) for c in p['spec']['containers']]
                return mutate
            await self._update_pod(ns, name, uid, pull_error('ErrImagePull', message))
            await asyncio.sleep(0.5)
            await self._update_pod(ns, name, uid, pull_error('ImagePullBackOff', f'Back-off pulling image "{image}"'))
            return

        if behaviour == 'workload':
            runnable = all((c.get('command') or [''])[0].startswith('/') and os.path.exists(c['command'][0])
                           for c in containers)
            if not runnable:
                log.info('pod %s/%s: no runnable command here, stays ContainerCreating', ns, name)
                return
            to_run = [(c, list(c['command']) + list(c.get('args') or [])) for c in containers]
        else:
            first = containers[0]
            env = self._container_env(pod, first, node)
            command = [expand_vars(a, env) for a in first.get('command') or []]
            args = [expand_vars(a, env) for a in first.get('args') or []]
            if behaviour == 'crash':
                argv = ['/bin/sh', '-c', CRASH_SCRIPT]
            elif self.agent_bin:
                argv = [self.agent_bin] + command[1:] + args
            else:
                argv = command + args
            to_run = [(first, argv)]

        pod = self._get(self.res('', 'v1', 'pods'), ns, name)
        if pod is None or pod['metadata']['uid'] != uid or uid in self.deleting:
            return
        if pod['status'].get('phase') != 'Pending':
            return  # e.g. the deadline passed first
        ctrs = []
        for spec_c, argv in to_run:
            env = self._container_env(pod, spec_c, node)
            ctr = await self._start_container(pod, spec_c, argv, env)
            ctrs.append(ctr)
            if agent is not None:
                agent.container = ctr
        current = self._get(self.res('', 'v1', 'pods'), ns, name)
        if current is None or current['metadata']['uid'] != uid or uid in self.deleting:
            # Deleted while its containers were starting: the delete saw no process, so stop them here.
            log.info('pod %s/%s was deleted while starting: stopping its containers', ns, name)
            await asyncio.gather(*(self._stop(c, DEFAULT_GRACE) for c in ctrs))
            self._remove_pod_cgroups(uid)
            return
        await self._mark_running(ns, name, uid, ctrs)

    @staticmethod
    def _conditions(scheduled: bool, ready: bool, reason: str | None = None) -> list[dict]:
        t = now_ts()
        out = [{'type': 'PodScheduled', 'status': 'True' if scheduled else 'False', 'lastProbeTime': None,
                'lastTransitionTime': t}]
        for ctype in ('Initialized', 'Ready', 'ContainersReady'):
            status = 'True' if ctype == 'Initialized' or ready else 'False'
            cond = {'type': ctype, 'status': status, 'lastProbeTime': None, 'lastTransitionTime': t}
            if status == 'False' and reason:
                cond['reason'] = reason
            out.append(cond)
        return out

    @staticmethod
    def _image_id(image: str) -> str:
        return f'{image.rsplit(":", 1)[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}'

    def _waiting_status(self, c: dict, reason: str, message: str | None = None) -> dict:
        waiting = {'reason': reason}
        if message:
            waiting['message'] = message
        return {'name': c['name'], 'image': c.get('image', ''), 'imageID': '', 'ready': False,
                'restartCount': 0, 'started': False, 'state': {'waiting': waiting}}

    def _running_status(self, c: dict, ctr: Container) -> dict:
        return {'name': c['name'], 'image': c.get('image', ''), 'imageID': self._image_id(c.get('image', '')),
                'containerID': f'containerd://{ctr.cid}', 'ready': True, 'restartCount': 0, 'started': True,
                'state': {'running': {'startedAt': ctr.started_at}}}

    def _terminated_status(self, c: dict, ctr: Container | None, code: int, reason: str,
                           message: str | None = None) -> dict:
        term: dict[str, Any] = {'exitCode': code, 'reason': reason,
                                'startedAt': ctr.started_at if ctr else None,
                                'finishedAt': (ctr.finished_at if ctr else None) or now_ts()}
        if ctr:
            term['containerID'] = f'containerd://{ctr.cid}'
        if message:
            term['message'] = message
        status = {'name': c['name'], 'image': c.get('image', ''), 'imageID': self._image_id(c.get('image', '')),
                  'ready': False, 'restartCount': 0, 'started': False, 'state': {'terminated': term}}
        if ctr:
            status['containerID'] = f'containerd://{ctr.cid}'
        return status

    def _container_env(self, pod: dict, c: dict, node: str | None) -> dict[str, str]:
        env = {'PATH': BASE_PATH, 'HOME': '/root', 'HOSTNAME': pod['metadata']['name']}
        fields = {
            'metadata.name': pod['metadata']['name'], 'metadata.namespace': pod['metadata'].get('namespace', ''),
            'metadata.uid': pod['metadata']['uid'], 'spec.nodeName': node or '',
            'spec.serviceAccountName': pod['spec'].get('serviceAccountName', 'default'),
            'status.hostIP': HOST_IP, 'status.podIP': HOST_IP,
        }
        for item in c.get('env') or []:
            if not isinstance(item, dict) or not item.get('name'):
                continue
            if 'value' in item:
                env[item['name']] = expand_vars(str(item.get('value') or ''), env)
            elif ((item.get('valueFrom') or {}).get('fieldRef') or {}).get('fieldPath') in fields:
                env[item['name']] = fields[item['valueFrom']['fieldRef']['fieldPath']]
            elif fp := ((item.get('valueFrom') or {}).get('fieldRef') or {}).get('fieldPath', ''):
                m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", fp)
                if m:
                    env[item['name']] = (pod['metadata'].get(m.group(1)) or {}).get(m.group(2), '')
        return env

    async def _start_container(self, pod: dict, c: dict, argv: list[str], env: dict[str, str]) -> Container:
        ns, name, uid = pod['metadata'].get('namespace', ''), pod['metadata']['name'], pod['metadata']['uid']
        cid = secrets.token_hex(32)
        pod_slice = os.path.join(self.cgroup_root, 'kubepods.slice', f'kubepods-pod{uid.replace("-", "_")}.slice')
        scope = os.path.join(pod_slice, f'cri-containerd-{cid}.scope')
        self._mkdir_cgroup(scope)
        log_dir = os.path.join(self.log_dir, f'{ns}_{name}_{uid}')
        os.makedirs(log_dir, exist_ok=True)
        log_path = os.path.join(log_dir, f'{c["name"]}.log')
        ctr = Container(namespace=ns, pod=name, uid=uid, name=c['name'], cid=cid, cgroup=scope, log_path=log_path)
        self.containers[(uid, c['name'])] = ctr
        wrapper = ['/bin/sh', '-c', 'echo $$ > "$1" || exit 125; shift; exec "$@"', 'mapguard-cgroup-enter',
                   os.path.join(scope, 'cgroup.procs')]
        stages = [wrapper[:3]]
        setpriv = shutil.which('setpriv')
        if setpriv:  # the container dies with the emulator even if it is SIGKILLed
            wrapper += [setpriv, '--pdeathsig', 'KILL', '--']
            stages.append(wrapper[-4:])
        ctr.argv = argv
        with open(log_path, 'ab') as logf:
            proc = await asyncio.create_subprocess_exec(
                *wrapper, *argv, stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf,
                env=env, cwd=c.get('workingDir') or '/', start_new_session=True)
        ctr.proc, ctr.pid = proc, proc.pid
        ctr.started_at = now_ts()
        await self._wait_exec(ctr, stages)
        log.info('started %s/%s[%s] pid %d in %s: %s', ns, name, c['name'], proc.pid, scope, argv)
        self._spawn(self._watch_container(ctr))
        return ctr

    @staticmethod
    async def _wait_exec(ctr: Container, stages: list[list[str]]) -> None:
        """Wait until the wrapper has exec'd the real command, so nobody sees the shell in the cgroup."""
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and ctr.proc is not None and ctr.proc.returncode is None:
            try:
                with open(f'/proc/{ctr.pid}/cmdline', 'rb') as f:
                    got = [a.decode(errors='replace') for a in f.read().split(b'\0')[:-1]]
            except OSError:
                return
            if not got or not any(got[:len(stage)] == stage for stage in stages):
                return  # exec'd (or a zombie already)
            await asyncio.sleep(0.002)

    async def _watch_container(self, ctr: Container) -> None:
        assert ctr.proc is not None
        code = await ctr.proc.wait()
        ctr.exit_code = code if code >= 0 else 128 - code
        ctr.finished_at = now_ts()
        self._cgroup_kill(ctr.cgroup)  # the main process is gone: the runtime kills the rest
        ctr.exited.set()
        log.info('container %s/%s[%s] pid %s exited with %s', ctr.namespace, ctr.pod, ctr.name, ctr.pid,
                 ctr.exit_code)
        if not self.shutting_down:
            await self._publish_exit(ctr)

    async def _publish_exit(self, ctr: Container) -> None:
        """Write an exited container's terminated status (and the pod's phase once all have exited)."""
        def terminated(p: dict) -> None:
            statuses = []
            for c in p['spec']['containers']:
                other = self.containers.get((ctr.uid, c['name']))
                if other is not None and other.exited.is_set():
                    statuses.append(self._terminated_status(
                        c, other, other.exit_code or 0, 'Completed' if other.exit_code == 0 else 'Error'))
                elif other is not None:
                    statuses.append(self._running_status(c, other))
                else:
                    statuses.extend(s for s in p['status'].get('containerStatuses') or [] if s['name'] == c['name'])
            p['status']['containerStatuses'] = statuses
            if all(s['state'].get('terminated') for s in statuses):
                if p['status'].get('reason') != 'DeadlineExceeded':
                    failed = any(s['state']['terminated']['exitCode'] != 0 for s in statuses)
                    p['status']['phase'] = 'Failed' if failed else 'Succeeded'
                p['status']['conditions'] = self._conditions(True, False, 'PodFailed' if p['status']['phase'] ==
                                                             'Failed' else 'PodCompleted')
        await self._update_pod(ctr.namespace, ctr.pod, ctr.uid, terminated)

    async def _mark_running(self, ns: str, name: str, uid: str, ctrs: list[Container]) -> None:
        by_name = {c.name: c for c in ctrs}

        def running(p: dict) -> None:
            if p['status'].get('phase') != 'Pending':
                return
            statuses = []
            for c in p['spec']['containers']:
                ctr = by_name.get(c['name'])
                if ctr is None:
                    statuses.append(self._waiting_status(c, 'NotEmulated', 'only the first container of an agent '
                                                                           'pod is run by the emulator'))
                elif ctr.exited.is_set():
                    statuses.append(self._terminated_status(c, ctr, ctr.exit_code or 0,
                                                            'Completed' if ctr.exit_code == 0 else 'Error'))
                else:
                    statuses.append(self._running_status(c, ctr))
            p['status']['containerStatuses'] = statuses
            p['status']['podIP'] = HOST_IP
            p['status']['podIPs'] = [{'ip': HOST_IP}]
            if all(s['state'].get('terminated') for s in statuses):
                failed = any(s['state']['terminated']['exitCode'] != 0 for s in statuses)
                p['status']['phase'] = 'Failed' if failed else 'Succeeded'
                p['status']['conditions'] = self._conditions(True, False, 'PodFailed' if failed else 'PodCompleted')
            else:
                p['status']['phase'] = 'Running'
                ready = all(s['ready'] for s in statuses)
                p['status']['conditions'] = self._conditions(True, ready, None if ready else 'ContainersNotReady')
        await self._update_pod(ns, name, uid, running)

    async def _deadline(self, ns: str, name: str, uid: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        pod = self._get(self.res('', 'v1', 'pods'), ns, name)
        if pod is None or pod['metadata']['uid'] != uid or pod['status'].get('phase') in ('Succeeded', 'Failed'):
            return
        log.info('pod %s/%s: activeDeadlineSeconds %s passed', ns, name, seconds)

        def exceeded(p: dict) -> None:
            p['status']['phase'] = 'Failed'
            p['status']['reason'] = 'DeadlineExceeded'
            p['status']['message'] = 'Pod was active on the node longer than the specified deadline'
        await self._update_pod(ns, name, uid, exceeded)
        live = [c for c in self._pod_containers(uid) if c.alive]
        await asyncio.gather(*(self._stop(c, KILL_AFTER) for c in live))
        if not live:
            def unknown(p: dict) -> None:
                p['status']['containerStatuses'] = [
                    self._terminated_status(c, None, 137, 'ContainerStatusUnknown',
                                            'The container could not be located when the pod was terminated')
                    for c in p['spec']['containers']]
                p['status']['conditions'] = self._conditions(True, False, 'PodFailed')
            await self._update_pod(ns, name, uid, unknown)

    async def _stop(self, ctr: Container, grace: float) -> None:
        """SIGTERM to the process group, SIGKILL after the grace; returns when the process has exited."""
        if not ctr.alive or ctr.pid is None:
            return
        sig = signal.SIGKILL if grace <= 0 else signal.SIGTERM
        try:
            os.killpg(ctr.pid, sig)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(ctr.exited.wait(), grace if grace > 0 else 5.0)
            return
        except TimeoutError:
            pass
        log.info('pid %s still alive after %ss: SIGKILL', ctr.pid, grace)
        if ctr.alive:
            try:
                os.killpg(ctr.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._cgroup_kill(ctr.cgroup)
        try:
            await asyncio.wait_for(ctr.exited.wait(), 5.0)
        except TimeoutError:
            log.error('pid %s did not die after SIGKILL', ctr.pid)

    # ---- cgroups ----------------------------------------------------------------------------

    def _mkdir_cgroup(self, path: str) -> None:
        missing = []
        cur = path
        while not os.path.isdir(cur):
            missing.append(cur)
            cur = os.path.dirname(cur)
        for d in reversed(missing):
            os.mkdir(d)
            self.created_cgroups.append(d)

    @staticmethod
    def _cgroup_kill(path: str) -> None:
        try:
            with open(os.path.join(path, 'cgroup.kill'), 'w') as f:
                f.write('1')
        except OSError:
            pass

    def _remove_pod_cgroups(self, uid: str) -> None:
        marker = f'kubepods-pod{uid.replace("-", "_")}.slice'
        for d in sorted((d for d in self.created_cgroups if marker in d), key=len, reverse=True):
            if self._rmdir(d):
                self.created_cgroups.remove(d)

    @staticmethod
    def _rmdir(path: str, tries: int = 1) -> bool:
        for i in range(tries):
            try:
                os.rmdir(path)
                return True
            except FileNotFoundError:
                return True
            except OSError as e:
                if i == tries - 1:
                    log.warning('cannot remove cgroup %s: %s', path, e)
                else:
                    time.sleep(0.05)
        return False

    # ---- apps status ------------------------------------------------------------------------

    async def _refresh_workloads(self, ns: str) -> None:
        pods = [p for p in self._list(self.res('', 'v1', 'pods'), ns)]
        for plural in ('deployments', 'statefulsets', 'daemonsets', 'replicasets'):
            res = self.res('apps', 'v1', plural)
            for obj in self._list(res, ns):
                def refresh(o: dict, plural: str = plural) -> bool:
                    status = self._workload_status(o, plural, pods)
                    old = o.get('status') or {}
                    for cond in status.get('conditions') or []:  # keep the times of unchanged conditions
                        for prev in old.get('conditions') or []:
                            if prev.get('type') == cond['type'] and prev.get('status') == cond['status']:
                                cond['lastUpdateTime'] = prev.get('lastUpdateTime', cond['lastUpdateTime'])
                                cond['lastTransitionTime'] = prev.get('lastTransitionTime',
                                                                      cond['lastTransitionTime'])
                    if status == old:
                        return False
                    o['status'] = status
                    return True
                await self._modify(res, ns, obj['metadata']['name'], refresh)

    def _workload_status(self, obj: dict, plural: str, pods: list[dict]) -> dict:
        reqs = selector_from_label_selector(obj['spec'].get('selector'))
        matched = [p for p in pods if labels_match(reqs, p['metadata'].get('labels'))
                   and not p['metadata'].get('deletionTimestamp')]
        ready = sum(1 for p in matched if p['status'].get('phase') == 'Running' and any(
            c['type'] == 'Ready' and c['status'] == 'True' for c in p['status'].get('conditions') or []))
        gen = obj['metadata'].get('generation', 1)
        if plural == 'daemonsets':
            meta = obj['metadata']
            desired = self.ds_desired.get((meta.get('namespace'), meta['name']), len(self.node_names))
            return {'currentNumberScheduled': len(matched), 'desiredNumberScheduled': desired,
                    'numberMisscheduled': 0, 'numberReady': ready, 'numberAvailable': ready,
                    'updatedNumberScheduled': len(matched), 'observedGeneration': gen}
        status: dict[str, Any] = {'observedGeneration': gen, 'replicas': len(matched)}
        if ready:
            status['readyReplicas'] = ready
            status['availableReplicas'] = ready
        if plural in ('deployments', 'statefulsets'):
            status['updatedReplicas'] = len(matched)
        if plural == 'statefulsets':
            status['currentReplicas'] = len(matched)
        if plural == 'deployments':
            available = ready >= (obj['spec'].get('replicas') or 0)
            status['conditions'] = [{'type': 'Available', 'status': 'True' if available else 'False',
                                     'reason': 'MinimumReplicasAvailable' if available else
                                     'MinimumReplicasUnavailable', 'lastUpdateTime': now_ts(),
                                     'lastTransitionTime': now_ts()}]
        return status

    # ---- start-up ---------------------------------------------------------------------------

    async def populate(self) -> None:
        """Create the scenario's cluster: namespaces, nodes, workloads, target pods (and start them)."""
        sc = self.scenario
        namespaces = self.res('', 'v1', 'namespaces')
        for ns in sc.get('namespaces') or ['default']:
            await self._commit(namespaces, 'ADDED', {
                'apiVersion': 'v1', 'kind': 'Namespace',
                'metadata': {'name': ns, 'uid': str(uuid.uuid4()), 'creationTimestamp': now_ts(),
                             'labels': {'kubernetes.io/metadata.name': ns}},
                'spec': {'finalizers': ['kubernetes']}, 'status': {'phase': 'Active'}})
        nodes = self.res('', 'v1', 'nodes')
        uname = os.uname()
        for node in self.node_names:
            pressure = self.behaviours.get(node) == 'unschedulable'
            conds = [{'type': t, 'status': 'True' if (t == 'DiskPressure' and pressure) else 'False',
                      'lastHeartbeatTime': now_ts(), 'lastTransitionTime': now_ts(), 'reason': 'Kubelet' + t,
                      'message': ''} for t in ('MemoryPressure', 'DiskPressure', 'PIDPressure')]
            conds.append({'type': 'Ready', 'status': 'True', 'lastHeartbeatTime': now_ts(),
                          'lastTransitionTime': now_ts(), 'reason': 'KubeletReady',
                          'message': 'kubelet is posting ready status'})
            spec: dict[str, Any] = {}
            if pressure:
                spec['taints'] = [{'key': 'node.kubernetes.io/disk-pressure', 'effect': 'NoSchedule',
                                   'timeAdded': now_ts()}]
            await self._commit(nodes, 'ADDED', {
                'apiVersion': 'v1', 'kind': 'Node',
                'metadata': {'name': node, 'uid': str(uuid.uuid4()), 'creationTimestamp': now_ts(),
                             'labels': {'kubernetes.io/hostname': node, 'kubernetes.io/os': 'linux',
                                        'kubernetes.io/arch': 'amd64', 'beta.kubernetes.io/os': 'linux',
                                        'beta.kubernetes.io/arch': 'amd64'}},
                'spec': spec,
                'status': {
                    'addresses': [{'type': 'InternalIP', 'address': HOST_IP}, {'type': 'Hostname', 'address': node}],
                    'conditions': conds,
                    'capacity': {'cpu': str(os.cpu_count() or 1), 'memory': '8Gi', 'pods': '110'},
                    'allocatable': {'cpu': str(os.cpu_count() or 1), 'memory': '8Gi', 'pods': '110'},
                    'nodeInfo': {'architecture': 'amd64', 'bootID': str(uuid.uuid4()),
                                 'containerRuntimeVersion': 'containerd://emulated', 'kernelVersion': uname.release,
                                 'kubeProxyVersion': 'v1.33.0', 'kubeletVersion': 'v1.33.0',
                                 'machineID': uuid.uuid4().hex, 'operatingSystem': 'linux',
                                 'osImage': 'mapguard kube emulator', 'systemUUID': str(uuid.uuid4())}}})

        # Workloads first, so that pods can point at their uids.
        pod_specs = [dict(p) for p in sc.get('pods') or []]
        owner_uids: dict[tuple[str, str, str], str] = {}
        for plural, kind in (('deployments', 'Deployment'), ('statefulsets', 'StatefulSet'),
                             ('daemonsets', 'DaemonSet')):
            res = self.res('apps', 'v1', plural)
            for w in sc.get(plural) or []:
                ns = w.get('namespace', 'default')
                selector = w.get('selector') or {'matchLabels': {}}
                reqs = selector_from_label_selector(selector)
                template_labels = dict(selector.get('matchLabels') or {})
                sample = next((p for p in pod_specs if p.get('namespace', 'default') == ns
                               and labels_match(reqs, p.get('labels'))), None)
                containers = [{'name': c.get('name', 'app'), 'image': self._target_image(c)}
                              for c in (sample or {}).get('containers') or []] or \
                             [{'name': 'app', 'image': 'localhost/mapguard-e2e/app:latest'}]
                uid = str(uuid.uuid4())
                owner_uids[(kind, ns, w['name'])] = uid
                spec: dict[str, Any] = {'selector': selector, 'template': {
                    'metadata': {'labels': template_labels}, 'spec': {'containers': containers}}}
                if plural != 'daemonsets':
                    spec['replicas'] = int(w.get('replicas', 1))
                if plural == 'statefulsets':
                    spec['serviceName'] = w['name']
                obj = {'apiVersion': 'apps/v1', 'kind': kind,
                       'metadata': {'name': w['name'], 'namespace': ns, 'uid': uid, 'generation': 1,
                                    'creationTimestamp': now_ts(), 'labels': dict(w.get('labels') or {})},
                       'spec': spec, 'status': {}}
                if plural == 'daemonsets':
                    self.ds_desired[(ns, w['name'])] = int(w.get('replicas', len(self.node_names)))
                obj['status'] = self._workload_status(obj, plural, [])
                await self._commit(res, 'ADDED', obj)

        # ReplicaSets for pod owners of kind ReplicaSet, owned by the Deployment that selects them.
        replicasets = self.res('apps', 'v1', 'replicasets')
        for p in pod_specs:
            owner = p.get('owner') or {}
            ns = p.get('namespace', 'default')
            if owner.get('kind') != 'ReplicaSet' or ('ReplicaSet', ns, owner['name']) in owner_uids:
                continue
            uid = str(uuid.uuid4())
            owner_uids[('ReplicaSet', ns, owner['name'])] = uid
            deploy = next((d for d in sc.get('deployments') or [] if d.get('namespace', 'default') == ns
                           and labels_match(selector_from_label_selector(d.get('selector')), p.get('labels'))), None)
            # The labels all its pods share (no pod-template-hash: the pods carry the scenario's labels only).
            owned = [q for q in pod_specs if (q.get('owner') or {}).get('kind') == 'ReplicaSet'
                     and q['owner'].get('name') == owner['name'] and q.get('namespace', 'default') == ns]
            labels = {k: v for k, v in (p.get('labels') or {}).items()
                      if all((q.get('labels') or {}).get(k) == v for q in owned)}
            meta: dict[str, Any] = {'name': owner['name'], 'namespace': ns, 'uid': uid, 'generation': 1,
                                    'creationTimestamp': now_ts(), 'labels': labels}
            if deploy:
                meta['ownerReferences'] = [{'apiVersion': 'apps/v1', 'kind': 'Deployment', 'name': deploy['name'],
                                            'uid': owner_uids[('Deployment', ns, deploy['name'])],
                                            'controller': True, 'blockOwnerDeletion': True}]
            rs_selector = {'matchLabels': labels}
            replicas = len(owned)
            obj = {'apiVersion': 'apps/v1', 'kind': 'ReplicaSet', 'metadata': meta,
                   'spec': {'replicas': replicas, 'selector': rs_selector,
                            'template': {'metadata': {'labels': labels}, 'spec': {'containers': [
                                {'name': c.get('name', 'app'), 'image': self._target_image(c)}
                                for c in p.get('containers') or []] or [{'name': 'app', 'image': 'app'}]}}},
                   'status': {'replicas': 0}}
            await self._commit(replicasets, 'ADDED', obj)

        for p in pod_specs:
            await self._add_target_pod(p, owner_uids)
        for ns in {p.get('namespace', 'default') for p in pod_specs}:
            await self._refresh_workloads(ns)

    @staticmethod
    def _target_image(c: dict) -> str:
        if c.get('image'):
            return c['image']
        base = os.path.basename((c.get('command') or ['app'])[0]) or 'app'
        base = re.sub(r'[^a-z0-9._-]', '-', base.lower())
        return f'localhost/mapguard-e2e/{base}:latest'

    async def _add_target_pod(self, p: dict, owner_uids: dict) -> None:
        pods = self.res('', 'v1', 'pods')
        ns = p.get('namespace', 'default')
        name = p['name']
        node = p.get('node') or (self.node_names[0] if self.node_names else 'node-a')
        phase = p.get('phase', 'Running')
        uid = str(uuid.uuid4())
        meta: dict[str, Any] = {'name': name, 'namespace': ns, 'uid': uid, 'creationTimestamp': now_ts(),
                                'labels': dict(p.get('labels') or {})}
        owner = p.get('owner')
        if owner:
            kind = owner.get('kind', 'ReplicaSet')
            meta['ownerReferences'] = [{
                'apiVersion': owner.get('apiVersion', 'apps/v1' if kind in (
                    'ReplicaSet', 'StatefulSet', 'DaemonSet', 'Deployment') else 'v1'),
                'kind': kind, 'name': owner['name'],
                'uid': owner.get('uid') or owner_uids.get((kind, ns, owner['name'])) or str(uuid.uuid4()),
                'controller': True, 'blockOwnerDeletion': True}]
            if kind == 'StatefulSet':
                meta['labels'].setdefault('statefulset.kubernetes.io/pod-name', name)
        containers = []
        for c in p.get('containers') or [{'name': 'app'}]:
            spec_c: dict[str, Any] = {'name': c.get('name', 'app'), 'image': self._target_image(c)}
            if c.get('command'):
                spec_c['command'] = list(c['command'])
            if c.get('args'):
                spec_c['args'] = list(c['args'])
            env = c.get('env')
            if isinstance(env, dict):
                spec_c['env'] = [{'name': k, 'value': str(v)} for k, v in env.items()]
            elif isinstance(env, list):
                spec_c['env'] = env
            if c.get('workingDir'):
                spec_c['workingDir'] = c['workingDir']
            containers.append(spec_c)
        pod = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': meta,
               'spec': {'nodeName': node, 'containers': containers}}
        self._default_pod(pod)
        started = now_ts()
        status: dict[str, Any] = {'phase': phase, 'qosClass': 'BestEffort', 'hostIP': HOST_IP,
                                  'hostIPs': [{'ip': HOST_IP}], 'startTime': started}
        ctrs: list[Container] = []
        if phase == 'Running':
            for c in containers:
                argv = list(c.get('command') or []) + list(c.get('args') or [])
                if not argv:
                    log.warning('pod %s/%s[%s] has no command: reported running, no process', ns, name, c['name'])
                    continue
                ctrs.append(await self._start_container(pod, c, argv, self._container_env(pod, c, node)))
            by_name = {c.name: c for c in ctrs}
            status['containerStatuses'] = []
            for c in containers:
                ctr = by_name.get(c['name'])
                if ctr is None:
                    ctr = Container(namespace=ns, pod=name, uid=uid, name=c['name'], cid=secrets.token_hex(32),
                                    cgroup='', log_path='')
                    ctr.started_at = started
                status['containerStatuses'].append(self._running_status(c, ctr))
            status['podIP'], status['podIPs'] = HOST_IP, [{'ip': HOST_IP}]
            status['conditions'] = self._conditions(True, True)
        elif phase in ('Succeeded', 'Failed'):
            code, reason = (0, 'Completed') if phase == 'Succeeded' else (1, 'Error')
            status['containerStatuses'] = []
            for c in containers:
                ghost = Container(namespace=ns, pod=name, uid=uid, name=c['name'], cid=secrets.token_hex(32),
                                  cgroup='', log_path='')
                ghost.started_at = started
                status['containerStatuses'].append(self._terminated_status(c, ghost, code, reason))
            status['conditions'] = self._conditions(True, False, 'PodCompleted' if code == 0 else 'PodFailed')
        else:
            status['containerStatuses'] = [self._waiting_status(c, 'ContainerCreating') for c in containers]
            status['conditions'] = self._conditions(True, False, 'ContainersNotReady')
        pod['status'] = status
        await self._commit(pods, 'ADDED', pod)
        for ctr in ctrs:
            if ctr.exited.is_set():  # exited before the pod was stored: its watcher found nothing to update
                await self._publish_exit(ctr)

    # ---- shutdown ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Kill every process started (process groups: SIGTERM, SIGKILL after 2 s), remove the cgroups."""
        self.shutting_down = True
        live = [c for c in self.containers.values() if c.alive]
        for c in live:
            try:
                os.killpg(c.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if live:
            done, pending = await asyncio.wait([asyncio.ensure_future(c.exited.wait()) for c in live],
                                               timeout=KILL_AFTER)
            for f in pending:
                f.cancel()
        for c in self.containers.values():
            if c.alive:  # not reaped yet, so its pid (= process group id) cannot belong to anyone else
                try:
                    os.killpg(c.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if c.cgroup:
                self._cgroup_kill(c.cgroup)  # whatever is left in the container's cgroup, and only that
        for c in self.containers.values():
            if c.alive:
                try:
                    await asyncio.wait_for(c.exited.wait(), 5.0)
                except TimeoutError:
                    log.error('pid %s survived SIGKILL', c.pid)
        for bus in list(self._buses.values()):
            await bus.put({'stop': True})  # wakes the watch streams up so that they end
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for d in sorted(self.created_cgroups, key=len, reverse=True):
            self._rmdir(d, tries=40)
        self.created_cgroups.clear()


# --------------------------------------------------------------------------------------------
# cgroup root and main


def cgroup2_mounts() -> list[str]:
    mounts = []
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields = line.split()
            sep = fields.index('-')
            if fields[sep + 1] == 'cgroup2':
                mounts.append(fields[4])
    return mounts


def mount_fstype(path: str) -> str:
    best, fstype = '', ''
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields = line.split()
            mnt = fields[4]
            sep = fields.index('-')
            if (path == mnt or path.startswith(mnt.rstrip('/') + '/')) and len(mnt) >= len(best):
                best, fstype = mnt, fields[sep + 1]
    return fstype


def resolve_cgroup_root(value: str | None) -> str:
    """An absolute path must be on cgroup2; a relative name goes under the cgroup2 mount."""
    mounts = cgroup2_mounts()
    if not value:
        value = f'mapguard-e2e-{os.getpid()}'
    if not os.path.isabs(value):
        if not mounts:
            raise SystemExit('emulator: no cgroup2 filesystem is mounted')
        return os.path.join(mounts[0], value)
    path = os.path.normpath(value)
    if mount_fstype(path) != 'cgroup2':
        hint = f'; cgroup v2 is mounted at {mounts[0]} here (or give a relative name)' if mounts else ''
        raise SystemExit(f'emulator: cgroup_root {path} is not on a cgroup2 filesystem{hint}')
    return path


async def amain(args: argparse.Namespace) -> int:
    with open(args.scenario) as f:
        scenario = json.load(f)
    cluster = scenario.get('cluster', '')
    # A test that pipes stderr without reading it would block the emulator once the pipe is full: --log.
    log_stream = open(args.log, 'a', buffering=1) if args.log else sys.stderr
    logging.basicConfig(stream=log_stream, level=logging.INFO,
                        format=f'%(asctime)s emulator[{cluster}] %(message)s')
    logging.getLogger('aiohttp.access').setLevel(logging.WARNING)  # one line per request is logged here
    for node, behaviour in (scenario.get('agent_behaviour') or {}).items():
        if behaviour not in BEHAVIOURS:
            raise SystemExit(f'emulator: agent_behaviour[{node!r}] = {behaviour!r}: not one of {", ".join(BEHAVIOURS)}')
    for i, pod in enumerate(scenario.get('pods') or []):
        if not isinstance(pod, dict) or not pod.get('name'):
            raise SystemExit(f'emulator: pods[{i}] has no name')
        if pod.get('phase', 'Running') not in ('Running', 'Pending', 'Succeeded', 'Failed'):
            raise SystemExit(f'emulator: pods[{i}].phase {pod["phase"]!r}: not Running, Pending, Succeeded or Failed')
    cgroup_root = resolve_cgroup_root(scenario.get('cgroup_root'))
    if scenario.get('agent_bin') and not os.access(scenario['agent_bin'], os.X_OK):
        log.warning('agent_bin %s is not executable', scenario['agent_bin'])
    emulator = Emulator(scenario, cgroup_root)
    os.makedirs(emulator.log_dir, exist_ok=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    web_server = aiohttp.web.Server(emulator, handler_cancellation=True)
    server = None
    async with emulator:  # kmock's handler context: errors become Status responses
        try:
            server = await loop.create_server(web_server, args.host, args.port)
            emulator.port = server.sockets[0].getsockname()[1]
            if os.path.isdir(cgroup_root):
                log.info('cgroup_root %s exists already: only what the emulator creates is removed', cgroup_root)
            else:
                emulator._mkdir_cgroup(cgroup_root)
            await emulator.populate()
            sys.stdout.write(json.dumps({'port': emulator.port}) + '\n')
            sys.stdout.flush()
            log.info('serving http://%s:%d (cgroups in %s, logs in %s)', args.host, emulator.port, cgroup_root,
                     emulator.log_dir)
            await stop.wait()
            log.info('stopping')
        finally:
            await emulator.shutdown()
            if server is not None:
                server.close()
                await asyncio.sleep(0.1)  # the streams just told to end write their last chunk
                await web_server.shutdown(0.5)
                try:
                    await asyncio.wait_for(server.wait_closed(), 1.0)
                except TimeoutError:
                    pass
            log.info('stopped')
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description='Kubernetes API emulator for kubectl-mapguard end-to-end tests')
    parser.add_argument('--scenario', required=True, help='scenario JSON file')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0, help='0: a free port')
    parser.add_argument('--log', help='append the log here instead of stderr')
    args = parser.parse_args()
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
