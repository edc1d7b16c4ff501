{{/* The pod of the StatefulSet (embedded store) and of the Deployment (PostgreSQL). */}}
{{- define "ordertrail.podTemplate" -}}
metadata:
  labels:
    {{- include "ordertrail.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed configuration rolls the pod, which reads its file only at startup.
    checksum/config: {{ include "ordertrail.configFile" . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "ordertrail.serviceAccountName" . }}
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # ordertrail drains its pipeline and commits on SIGTERM; acknowledged spans are on the volume already.
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: ordertrail
      image: {{ include "ordertrail.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - run
        - --config=/etc/ordertrail/config.yaml
        - --grpc-listen=0.0.0.0:{{ .Values.ports.otlpGrpc }}
        - --http-listen=0.0.0.0:{{ .Values.ports.otlpHttp }}
        - --api-http-listen=0.0.0.0:{{ .Values.ports.apiHttp }}
        - --api-grpc-listen=0.0.0.0:{{ .Values.ports.apiGrpc }}
        - --data-dir=/var/lib/ordertrail
      ports:
        - name: otlp-grpc
          containerPort: {{ .Values.ports.otlpGrpc }}
          protocol: TCP
        - name: otlp-http
          containerPort: {{ .Values.ports.otlpHttp }}
          protocol: TCP
        - name: api-http
          containerPort: {{ .Values.ports.apiHttp }}
          protocol: TCP
        - name: api-grpc
          containerPort: {{ .Values.ports.apiGrpc }}
          protocol: TCP
      # Restoring a large store takes a while: the startup probe gives it up to five minutes before liveness
      # counts.
      startupProbe:
        httpGet:
          path: /healthz
          port: api-http
          scheme: {{ include "ordertrail.apiScheme" . }}
        periodSeconds: 5
        failureThreshold: 60
      livenessProbe:
        httpGet:
          path: /healthz
          port: api-http
          scheme: {{ include "ordertrail.apiScheme" . }}
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 6
      # Not ready before startup completes, after shutdown begins, while the store cannot commit, or when the
      # engine stops answering: the Service then sends nothing new, and the collector's retry queue holds the spans.
      readinessProbe:
        httpGet:
          path: /readyz
          port: api-http
          scheme: {{ include "ordertrail.apiScheme" . }}
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 2
      resources:
        requests:
          memory: {{ printf "%dMi" (int .Values.memory.requestMiB) }}
          {{- with .Values.resources.requests }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        limits:
          memory: {{ printf "%dMi" (int .Values.memory.limitMiB) }}
          {{- with .Values.resources.limits }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
      {{- if or .Values.extraEnv .Values.postgres.existingSecret }}
      env:
        {{- if .Values.postgres.existingSecret }}
        - name: ORDERTRAIL_POSTGRES_URL
          valueFrom:
            secretKeyRef:
              name: {{ .Values.postgres.existingSecret }}
              key: {{ .Values.postgres.secretKey }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/ordertrail
          readOnly: true
        - name: data
          mountPath: /var/lib/ordertrail
        - name: tmp
          mountPath: /tmp
        {{- range .Values.secretMounts }}
        - name: secret-{{ .name }}
          mountPath: {{ .mountPath }}
          readOnly: true
        {{- end }}
        {{- if and .Values.postgres.existingSecret .Values.postgres.tls.existingSecret }}
        - name: postgres-tls
          mountPath: /etc/ordertrail/secrets/postgres-tls
          readOnly: true
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "ordertrail.fullname" . }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- range .Values.secretMounts }}
    - name: secret-{{ .name }}
      secret:
        secretName: {{ .secretName }}
        defaultMode: 0440
    {{- end }}
    {{- if and .Values.postgres.existingSecret .Values.postgres.tls.existingSecret }}
    - name: postgres-tls
      secret:
        secretName: {{ .Values.postgres.tls.existingSecret }}
        defaultMode: 0440
    {{- end }}
    {{- if or (not .Values.persistence.enabled) .Values.postgres.existingSecret }}
    # With PostgreSQL the state is in the database; the data directory stays empty.
    - name: data
      emptyDir: {}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and (gt (int .Values.replicaCount) 1) (not .Values.affinity) }}
  # Replicas on different nodes where possible, so that losing a node does not take them all.
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "ordertrail.selectorLabels" . | nindent 16 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
