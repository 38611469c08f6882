"""Artifacts in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, …), through boto3.

Same content-addressed semantics as the local folder: ``<prefix>sha256/<2 hex>/<62 hex>``. A
write uploads to a temporary key (multipart above ``multipart_threshold``), reads it back and
checks its digest, then publishes it under the digest's key with a server-side copy and deletes
the temporary object; a digest already present is never written again, only copied onto itself
so that its LastModified is fresh (gc's grace period counts from it). Every read checks the
digest. Credentials come from boto3's usual chain (environment, profile, instance role) and
never appear in messages.

A killed writer leaves a temporary key under ``<prefix>tmp/``, or an unfinished multipart
upload there; :meth:`S3ArtifactStore.entries` lists both, with their age.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from lockgate.errors import IntegrityError, InvalidInputError, NotFoundError, StorageError
from lockgate.store.artifacts.interface import EntryKind, StoredEntry
from lockgate.types import Digest

__all__ = ["S3ArtifactStore", "parse_s3_url"]

_BLOB_KEY = re.compile(r"sha256/([0-9a-f]{2})/([0-9a-f]{62})")
_MISSING = ("404", "NoSuchKey", "NotFound")
_COPY_LIMIT = 5 << 30  # the largest object one CopyObject request may copy


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → ``("bucket", "prefix/")``."""
    if not url.startswith("s3://"):
        raise InvalidInputError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise InvalidInputError(f"no bucket in {url!r}", hint="s3://bucket/optional/prefix")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/") if prefix else ""


class S3ArtifactStore:
    def __init__(self, url: str, *, endpoint_url: str | None = None, client: Any = None,
                 multipart_threshold: int = 64 << 20, multipart_chunksize: int = 16 << 20
                 ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = url
        if client is None:
            try:
                import boto3
            except ImportError:
                raise StorageError("the S3 artifact store needs boto3",
                                   hint="pip install 'lockgate[s3]'") from None
            client = boto3.client("s3", endpoint_url=endpoint_url)
        self._s3 = client
        from boto3.s3.transfer import TransferConfig

        self._transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                        multipart_chunksize=multipart_chunksize)

    def key_for(self, digest: Digest) -> str:
        return f"{self.prefix}sha256/{digest.hex[:2]}/{digest.hex[2:]}"

    def _error(self, exc: Exception, what: str) -> StorageError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        return StorageError(f"S3 {what} failed in {self.url}: {code}",
                            hint="check the bucket, the endpoint and the credentials")

    def exists(self, digest: Digest) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=self.key_for(digest))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error(exc, "head") from None
        except BotoCoreError as exc:
            raise self._error(exc, "head") from None

    def put(self, data: bytes) -> Digest:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = Digest.of_bytes(data)
        if self._touch(digest):
            return digest
        tmp = f"{self.prefix}tmp/{uuid.uuid4().hex}"
        try:
            self._s3.upload_fileobj(io.BytesIO(data), self.bucket, tmp, Config=self._transfer)
            try:
                uploaded = self._read(tmp)
                if hashlib.sha256(uploaded).hexdigest() != digest.hex:
                    raise IntegrityError(f"the upload of {digest} to {self.url} came back "
                                         "different; nothing was published")
                if not self.exists(digest):  # another writer may have published it meanwhile
                    self._s3.copy_object(Bucket=self.bucket, Key=self.key_for(digest),
                                         CopySource={"Bucket": self.bucket, "Key": tmp})
            finally:
                self._s3.delete_object(Bucket=self.bucket, Key=tmp)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"write of {digest}") from None
        return digest

    def _touch(self, digest: Digest) -> bool:
        """Refresh the LastModified of a stored blob by copying it onto itself (S3 refuses a
        copy onto itself that changes nothing, hence ``MetadataDirective=REPLACE``); False
        when there is none. The copy is server-side: no bytes travel."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key_for(digest)
        source = {"Bucket": self.bucket, "Key": key}
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key)
            if int(head.get("ContentLength", 0)) < _COPY_LIMIT:
                self._s3.copy_object(Bucket=self.bucket, Key=key, CopySource=source,
                                     MetadataDirective="REPLACE")
            else:  # one CopyObject stops at 5 GiB: a multipart copy, part by part
                self._s3.copy(source, self.bucket, key, Config=self._transfer)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False  # not there, or removed between the two calls: write it
            raise self._error(exc, f"refresh of {digest}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"refresh of {digest}") from None

    def _read(self, key: str) -> bytes:
        buf = io.BytesIO()
        self._s3.download_fileobj(self.bucket, key, buf, Config=self._transfer)
        return buf.getvalue()

    def get(self, digest: Digest) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key_for(digest)
        try:
            data = self._read(key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise NotFoundError(f"artifact {digest} is not in {self.url}") from None
            raise self._error(exc, f"read of {digest}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"read of {digest}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest.hex:
            raise IntegrityError(
                f"artifact {digest} is corrupt: its content hashes to sha256:{actual}",
                hint=f"the object s3://{self.bucket}/{key} was changed after it was stored")
        return data

    def entries(self) -> Iterator[StoredEntry]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for sub in ("sha256/", "tmp/"):
                pages = self._s3.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.prefix + sub)
                for page in pages:
                    for obj in page.get("Contents", []):
                        name = str(obj["Key"])[len(self.prefix):]
                        size, when = int(obj.get("Size", 0)), _posix(obj["LastModified"])
                        if sub == "tmp/":
                            yield StoredEntry(EntryKind.TEMP, name, size, when)
                        elif m := _BLOB_KEY.fullmatch(name):
                            yield StoredEntry(EntryKind.BLOB, name, size, when,
                                              Digest(f"sha256:{m[1]}{m[2]}"))
            uploads = self._s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix + "tmp/")
            for page in uploads:
                for up in page.get("Uploads", []):
                    parts = self._s3.list_parts(Bucket=self.bucket, Key=up["Key"],
                                                UploadId=up["UploadId"]).get("Parts", [])
                    yield StoredEntry(EntryKind.TEMP, str(up["Key"])[len(self.prefix):],
                                      sum(int(p.get("Size", 0)) for p in parts),
                                      _posix(up["Initiated"]), handle=str(up["UploadId"]))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "listing") from None

    def remove(self, entry: StoredEntry) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.prefix + entry.name
        try:
            if entry.handle:
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                UploadId=entry.handle)
                return True
            head = self._s3.head_object(Bucket=self.bucket, Key=key)
            if _posix(head["LastModified"]) >= entry.modified + 1:  # S3 times are in seconds
                return False  # written again since it was listed: a writer wants it
            self._s3.delete_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (*_MISSING, "NoSuchUpload"):
                return False
            raise self._error(exc, f"delete of {entry.name}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"delete of {entry.name}") from None


def _posix(when: Any) -> float:
    return when.timestamp() if isinstance(when, datetime) else float(when)
