/// The Grafana dashboard for Grayscale's /metrics (dashboards/grafana.json holds the same JSON).
public enum GrafanaDashboard {
    public static let json = #"""
{
  "annotations": {
    "list": [
      {
        "datasource": {
          "type": "prometheus",
          "uid": "${datasource}"
        },
        "enable": true,
        "expr": "changes(grayscale_rollbacks_total{service=\"$service\"}[1m]) > 0",
        "iconColor": "red",
        "name": "Rollbacks",
        "titleFormat": "rollback"
      }
    ]
  },
  "editable": true,
  "panels": [
    {
      "datasource": {
        "type": "prometheus",
        "uid": "${datasource}"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "reqps"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 0
      },
      "id": 1,
      "options": {
        "legend": {
          "displayMode": "table",
          "placement": "bottom"
        }
      },
      "targets": [
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "sum by (release, label) (rate(grayscale_requests_total{service=\"$service\"}[1m]))",
          "legendFormat": "{{release}} ({{label}})",
          "refId": "A"
        },
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "sum(rate(grayscale_requests_total{service=\"$service\"}[1m]))",
          "legendFormat": "all versions",
          "refId": "B"
        }
      ],
      "title": "Request rate by version",
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "${datasource}"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "percentunit"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 0
      },
      "id": 2,
      "options": {
        "legend": {
          "displayMode": "table",
          "placement": "bottom"
        }
      },
      "targets": [
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "sum by (release, label) (rate(grayscale_request_errors_total{service=\"$service\",class!=\"rejected\"}[1m])) / sum by (release, label) (rate(grayscale_requests_total{service=\"$service\"}[1m]))",
          "legendFormat": "{{release}} ({{label}})",
          "refId": "A"
        },
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "sum(rate(grayscale_request_errors_total{service=\"$service\",class!=\"rejected\"}[1m])) / sum(rate(grayscale_requests_total{service=\"$service\"}[1m]))",
          "legendFormat": "all versions",
          "refId": "B"
        }
      ],
      "title": "Error rate by version",
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "${datasource}"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "s"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 8
      },
      "id": 3,
      "options": {
        "legend": {
          "displayMode": "table",
          "placement": "bottom"
        }
      },
      "targets": [
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "histogram_quantile(0.5, sum by (le, release, label) (rate(grayscale_request_duration_seconds_bucket{service=\"$service\"}[5m])))",
          "legendFormat": "{{release}} ({{label}})",
          "refId": "A"
        },
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "histogram_quantile(0.5, sum by (le) (rate(grayscale_request_duration_seconds_bucket{service=\"$service\"}[5m])))",
          "legendFormat": "all versions",
          "refId": "B"
        }
      ],
      "title": "p50 latency by version",
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "${datasource}"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "s"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 8
      },
      "id": 4,
      "options": {
        "legend": {
          "displayMode": "table",
          "placement": "bottom"
        }
      },
      "targets": [
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "histogram_quantile(0.99, sum by (le, release, label) (rate(grayscale_request_duration_seconds_bucket{service=\"$service\"}[5m])))",
          "legendFormat": "{{release}} ({{label}})",
          "refId": "A"
        },
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "histogram_quantile(0.99, sum by (le) (rate(grayscale_request_duration_seconds_bucket{service=\"$service\"}[5m])))",
          "legendFormat": "all versions",
          "refId": "B"
        }
      ],
      "title": "p99 latency by version",
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "${datasource}"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "percent"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 16
      },
      "id": 5,
      "options": {
        "legend": {
          "displayMode": "table",
          "placement": "bottom"
        }
      },
      "targets": [
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "grayscale_canary_percent{service=\"$service\"}",
          "legendFormat": "canary %",
          "refId": "A"
        },
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "grayscale_rollout_step{service=\"$service\"}",
          "legendFormat": "step",
          "refId": "B"
        }
      ],
      "title": "Canary share of users",
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "${datasource}"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 16
      },
      "id": 6,
      "options": {
        "legend": {
          "displayMode": "table",
          "placement": "bottom"
        }
      },
      "targets": [
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "sum by (outcome) (increase(grayscale_verdicts_total{service=\"$service\"}[5m]))",
          "legendFormat": "verdicts {{outcome}}",
          "refId": "A"
        },
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "increase(grayscale_rollbacks_total{service=\"$service\"}[5m])",
          "legendFormat": "rollbacks",
          "refId": "B"
        },
        {
          "datasource": {
            "type": "prometheus",
            "uid": "${datasource}"
          },
          "expr": "increase(grayscale_promotions_total{service=\"$service\"}[5m])",
          "legendFormat": "promotions",
          "refId": "C"
        }
      ],
      "title": "Rollout events",
      "type": "timeseries"
    }
  ],
  "refresh": "10s",
  "schemaVersion": 39,
  "tags": [
    "grayscale",
    "canary"
  ],
  "templating": {
    "list": [
      {
        "current": {},
        "hide": 0,
        "label": "Prometheus",
        "name": "datasource",
        "query": "prometheus",
        "type": "datasource"
      },
      {
        "current": {},
        "datasource": {
          "type": "prometheus",
          "uid": "${datasource}"
        },
        "definition": "label_values(grayscale_requests_total, service)",
        "hide": 0,
        "label": "Service",
        "name": "service",
        "query": {
          "query": "label_values(grayscale_requests_total, service)",
          "refId": "services"
        },
        "refresh": 2,
        "type": "query"
      }
    ]
  },
  "time": {
    "from": "now-1h",
    "to": "now"
  },
  "title": "Grayscale",
  "uid": "grayscale",
  "version": 1
}
"""#
}
