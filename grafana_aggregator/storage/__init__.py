"""Where API objects live: the `IStore` interface and its backends (memory for tests, files by default, etcd)."""

from .interface import (
    AlreadyExistsError,
    Collection,
    ConflictError,
    ExpiredError,
    InvalidKeyError,
    IStore,
    IWatch,
    ListResult,
    NotFoundError,
    StorageError,
    StorageFullError,
    StorageTimeoutError,
    StorageUnavailableError,
    StoreLockedError,
    WatchEvent,
    validate_path_segment,
)

__all__ = [
    "AlreadyExistsError",
    "Collection",
    "ConflictError",
    "ExpiredError",
    "IStore",
    "IWatch",
    "InvalidKeyError",
    "ListResult",
    "NotFoundError",
    "StorageError",
    "StorageFullError",
    "StorageTimeoutError",
    "StorageUnavailableError",
    "StoreLockedError",
    "WatchEvent",
    "validate_path_segment",
]
