"""Settings, all read from the environment (django-environ) with safe embedded defaults.

With nothing set, the app runs on a SQLite file and a filesystem Celery broker, so it works on a
fresh machine with no services. Production sets DATABASE_URL (PostgreSQL), CELERY_BROKER_URL
(Redis), SECRET_KEY, FIELD_ENCRYPTION_KEY, ALLOWED_HOSTS and DSAR_PUBLIC_URL. With DEBUG off
(the default) every security setting is on.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("DSAR_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "django-insecure-dev-only-key-never-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "axes",
    "cases",
    "connectors",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Brute-force protection of the admin login; must come last.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Lock a username from one address out after this many failures, for this long.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

ROOT_URLCONF = "dsar.urls"
WSGI_APPLICATION = "dsar.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'dsar.sqlite3'}"),
}
if env.str("TEST_DATABASE_NAME", default=""):
    # Concurrent test runs on one server each get their own test database (bin/test).
    DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the worker and beat share the file: wait for locks instead of failing,
    # and take the write lock up front so two writers never deadlock on an upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env.str("TIME_ZONE", default="Europe/London")
USE_I18N = True
USE_TZ = True

# --- Static files and stored archives -------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
ARCHIVE_ROOT = Path(env.str("DSAR_ARCHIVE_ROOT", default=str(VAR_DIR / "archives")))
STORAGES = {
    # Archives hold personal data: a private location, never served as media. Downloads go
    # through a permission-checked, audited admin view.
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(ARCHIVE_ROOT), "base_url": None},
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
WHITENOISE_MANIFEST_STRICT = False

# --- Security (all on unless DEBUG) ---------------------------------------------------------
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"

# --- Celery ---------------------------------------------------------------------------------
# Default broker: kombu's filesystem transport, which needs no server (fresh machines, demos).
# Production and the test suite use Redis: CELERY_BROKER_URL=redis://127.0.0.1:6379/0
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # else ./control in the working dir
        "store_processed": False,
    }
else:
    # Unacknowledged tasks come back after this long. Nothing here waits that long inside a
    # task: long waits belong to the beat-driven sync, which reads its schedule from the DB.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=900)
    }
# One queue per deployment (or per test run, so concurrent runs on one Redis never consume
# each other's messages); workers and beat read the same setting.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes every database connection after every task unless this is
# set: a new PostgreSQL connection per task took 12 % of a worker's time (docs/benchmarks.md).
# With it, connections live as CONN_MAX_AGE says, checked around each task as Django does
# around each request (dsar/celery.py), and Celery recycles them every 2 × this many tasks.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=500)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
DSAR_SYNC_INTERVAL = env.int("DSAR_SYNC_INTERVAL", default=60)
CELERY_BEAT_SCHEDULE = {
    "sync-vendor-jobs": {
        "task": "cases.tasks.sync_vendor_jobs",
        "schedule": timedelta(seconds=DSAR_SYNC_INTERVAL),
        "options": {"expires": DSAR_SYNC_INTERVAL},
    },
    "purge-expired-archives": {
        "task": "cases.tasks.purge_expired_archives",
        "schedule": timedelta(hours=1),
        "options": {"expires": 3600},
    },
}

# --- The product ----------------------------------------------------------------------------
# Public base URL of this app, used to build vendor callback URLs.
DSAR_PUBLIC_URL = env.str("DSAR_PUBLIC_URL", default="http://127.0.0.1:8000")
# Public holidays that push a deadline to the next working day (python-holidays codes).
DSAR_HOLIDAY_COUNTRY = env.str("DSAR_HOLIDAY_COUNTRY", default="GB")
DSAR_HOLIDAY_SUBDIVISION = env.str("DSAR_HOLIDAY_SUBDIVISION", default="ENG") or None
DSAR_DUE_SOON_DAYS = env.int("DSAR_DUE_SOON_DAYS", default=7)
# create_demo_users refuses to run unless this is on (never in production).
DSAR_ALLOW_DEMO_USERS = env.bool("DSAR_ALLOW_DEMO_USERS", default=DEBUG)

# Pipeline tuning (seconds unless said otherwise).
DSAR_SYNC_BATCH = env.int("DSAR_SYNC_BATCH", default=1000)
DSAR_JOB_LEASE_SECONDS = env.int("DSAR_JOB_LEASE_SECONDS", default=300)
DSAR_POLL_INTERVAL = env.float("DSAR_POLL_INTERVAL", default=15.0)
DSAR_POLL_MAX_INTERVAL = env.float("DSAR_POLL_MAX_INTERVAL", default=1800.0)
DSAR_ERROR_BACKOFF = env.float("DSAR_ERROR_BACKOFF", default=30.0)
DSAR_MAX_VENDOR_ERRORS = env.int("DSAR_MAX_VENDOR_ERRORS", default=8)
# A vendor export still running after this long is flagged stuck (the job fails, readably).
DSAR_STUCK_AFTER_HOURS = env.float("DSAR_STUCK_AFTER_HOURS", default=72.0)
# Stored archives are deleted this many days after their case finished (0 keeps them).
DSAR_ARCHIVE_RETENTION_DAYS = env.int("DSAR_ARCHIVE_RETENTION_DAYS", default=30)
DSAR_MAX_ARCHIVE_BYTES = env.int("DSAR_MAX_ARCHIVE_BYTES", default=5 * 1024**3)
# Vendor archive hosts on loopback/private addresses are refused unless this is on (sandboxes).
DSAR_ALLOW_PRIVATE_VENDOR_HOSTS = env.bool("DSAR_ALLOW_PRIVATE_VENDOR_HOSTS", default=DEBUG)

# Vendor secrets are encrypted at rest (django-fernet-encrypted-fields): the Fernet key is
# derived from SECRET_KEY and this salt. Keep both stable; rotate with SECRET_KEY_FALLBACKS.
SALT_KEY = env.list("FIELD_ENCRYPTION_SALT", default=[])
if not SALT_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_SALT must be set when DEBUG is off.")
    SALT_KEY = ["dev-only-salt"]

# --- Logging: never personal data or secrets ------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"mask_personal_data": {"()": "cases.logging.MaskPersonalData"}},
    "formatters": {
        "plain": {
            "()": "cases.logging.MaskingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["mask_personal_data"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # urllib3 logs full URLs, and vendor query strings carry subject emails.
        "urllib3": {"level": "ERROR"},
        "simple_salesforce": {"level": "WARNING"},
    },
}
