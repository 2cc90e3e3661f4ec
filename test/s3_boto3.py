"""boto3 against a running mountd S3 listener: run by test/s3-clients.test.ts.

Usage: python3 test/s3_boto3.py ENDPOINT BUCKET

Covers put/get/head/list/delete, copies, multipart (also UploadPartCopy with ranges), SSE-C,
presigned URLs, and the aws-chunked bodies with trailing checksums that boto3 sends over
HTTPS (forced here over plain HTTP). Prints OK and exits 0 when everything held.
"""
import base64
import hashlib
import io
import os
import sys
import urllib.request

import boto3
import botocore.httpchecksum
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, bucket = sys.argv[1], sys.argv[2]
MiB = 1024 * 1024


def client(**config):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="mountdadmin",
        aws_secret_access_key="mountdadmin",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


def error_code(fn):
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("expected an error")


def md5(b):
    return hashlib.md5(b).hexdigest()


s3 = client()
s3.create_bucket(Bucket=bucket)

# put / get / head with user metadata; the ETag is the plaintext MD5 (header checksums over HTTP).
small = b"hello from boto3\n"
r = s3.put_object(Bucket=bucket, Key="dir/small.txt", Body=small, Metadata={"colour": "blue"}, ContentType="text/plain")
assert r["ETag"] == f'"{md5(small)}"', r["ETag"]
assert r["ServerSideEncryption"] == "AES256"
h = s3.head_object(Bucket=bucket, Key="dir/small.txt")
assert h["ContentLength"] == len(small) and h["Metadata"] == {"colour": "blue"} and h["ContentType"] == "text/plain", h
assert s3.get_object(Bucket=bucket, Key="dir/small.txt")["Body"].read() == small

# The headers S3 stores besides Content-Type, as an SDK reads them back.
import datetime
expires = datetime.datetime(2037, 10, 21, 7, 28, tzinfo=datetime.timezone.utc)
s3.put_object(Bucket=bucket, Key="dir/page.html.gz", Body=b"\x1f\x8b", ContentType="text/html", ContentEncoding="gzip",
              CacheControl="max-age=60", ContentDisposition='inline; filename="page.html"', ContentLanguage="en", Expires=expires)
for h in (s3.head_object(Bucket=bucket, Key="dir/page.html.gz"), s3.get_object(Bucket=bucket, Key="dir/page.html.gz")):
    got = {k: h.get(k) for k in ("ContentType", "ContentEncoding", "CacheControl", "ContentDisposition", "ContentLanguage", "Expires")}
    assert got == {"ContentType": "text/html", "ContentEncoding": "gzip", "CacheControl": "max-age=60",
                   "ContentDisposition": 'inline; filename="page.html"', "ContentLanguage": "en", "Expires": expires}, got

# Conditional writes (a lock file, as Terraform's S3 backend takes one): create-only, then replace-if-unchanged.
lock = s3.put_object(Bucket=bucket, Key="dir/lock", Body=b"held by A", IfNoneMatch="*")
assert error_code(lambda: s3.put_object(Bucket=bucket, Key="dir/lock", Body=b"held by B", IfNoneMatch="*")) == ("PreconditionFailed", 412)
assert error_code(lambda: s3.put_object(Bucket=bucket, Key="dir/lock", Body=b"stale", IfMatch='"' + "0" * 32 + '"')) == ("PreconditionFailed", 412)
s3.put_object(Bucket=bucket, Key="dir/lock", Body=b"renewed by A", IfMatch=lock["ETag"])
assert s3.get_object(Bucket=bucket, Key="dir/lock")["Body"].read() == b"renewed by A"
s3.delete_object(Bucket=bucket, Key="dir/lock")

# Trailing checksums in aws-chunked bodies (STREAMING-UNSIGNED-PAYLOAD-TRAILER): botocore uses
# them over HTTPS only, so make it believe the endpoint is HTTPS while it still speaks HTTP.
real_urlparse = botocore.httpchecksum.urlparse


def https_urlparse(url, *args, **kwargs):
    return real_urlparse(url, *args, **kwargs)._replace(scheme="https")


botocore.httpchecksum.urlparse = https_urlparse
try:
    for algorithm in ["CRC32", "SHA256", "SHA1"]:  # CRC32C and CRC64NVME need botocore[crt]
        body = os.urandom(300_000)
        key = f"trailer/{algorithm}.bin"
        r = s3.put_object(Bucket=bucket, Key=key, Body=io.BytesIO(body), ChecksumAlgorithm=algorithm)
        assert r["ETag"] == f'"{md5(body)}"', (algorithm, r)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    # Multipart through the transfer manager, parts with trailing CRC32.
    big = os.urandom(12 * MiB + 12345)
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_fileobj(io.BytesIO(big), bucket, "multi/big.bin", Config=cfg)
finally:
    botocore.httpchecksum.urlparse = real_urlparse

h = s3.head_object(Bucket=bucket, Key="multi/big.bin")
parts = [big[i : i + 5 * MiB] for i in range(0, len(big), 5 * MiB)]
expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"
assert h["ETag"] == f'"{expected}"', (h["ETag"], expected)
assert h["ContentLength"] == len(big)
got = io.BytesIO()
s3.download_fileobj(bucket, "multi/big.bin", got, Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
assert got.getvalue() == big
assert s3.get_object(Bucket=bucket, Key="multi/big.bin", Range="bytes=5242878-5242881")["Body"].read() == big[5242878:5242882]

# Low-level multipart with UploadPartCopy ranges, ListParts, ListMultipartUploads, Abort.
up = s3.create_multipart_upload(Bucket=bucket, Key="multi/copied.bin", Metadata={"from": "parts"})
uid = up["UploadId"]
p1 = s3.upload_part_copy(Bucket=bucket, Key="multi/copied.bin", UploadId=uid, PartNumber=1, CopySource={"Bucket": bucket, "Key": "multi/big.bin"}, CopySourceRange=f"bytes=0-{6 * MiB - 1}")
p2 = s3.upload_part(Bucket=bucket, Key="multi/copied.bin", UploadId=uid, PartNumber=2, Body=b"tail")
listed = s3.list_parts(Bucket=bucket, Key="multi/copied.bin", UploadId=uid)["Parts"]
assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 6 * MiB), (2, 4)], listed
uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
assert [u["UploadId"] for u in uploads] == [uid], uploads
assert error_code(lambda: s3.complete_multipart_upload(Bucket=bucket, Key="multi/copied.bin", UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": p2["ETag"]}, {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]}]})) == ("InvalidPartOrder", 400)
assert error_code(lambda: s3.complete_multipart_upload(Bucket=bucket, Key="multi/copied.bin", UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]})) == ("InvalidPart", 400)
s3.complete_multipart_upload(Bucket=bucket, Key="multi/copied.bin", UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
o = s3.get_object(Bucket=bucket, Key="multi/copied.bin")
assert o["Body"].read() == big[: 6 * MiB] + b"tail" and o["Metadata"] == {"from": "parts"} and o["ETag"].endswith('-2"')
up2 = s3.create_multipart_upload(Bucket=bucket, Key="multi/aborted.bin")
s3.abort_multipart_upload(Bucket=bucket, Key="multi/aborted.bin", UploadId=up2["UploadId"])
assert error_code(lambda: s3.list_parts(Bucket=bucket, Key="multi/aborted.bin", UploadId=up2["UploadId"])) == ("NoSuchUpload", 404)
assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)

# Copies: COPY keeps metadata, REPLACE sets new, a self-copy with REPLACE touches metadata only.
s3.copy_object(Bucket=bucket, Key="copy/a.txt", CopySource={"Bucket": bucket, "Key": "dir/small.txt"})
assert s3.head_object(Bucket=bucket, Key="copy/a.txt")["Metadata"] == {"colour": "blue"}
s3.copy_object(Bucket=bucket, Key="copy/b.txt", CopySource={"Bucket": bucket, "Key": "dir/small.txt"}, MetadataDirective="REPLACE", Metadata={"colour": "red"})
assert s3.head_object(Bucket=bucket, Key="copy/b.txt")["Metadata"] == {"colour": "red"}
assert error_code(lambda: s3.copy_object(Bucket=bucket, Key="copy/b.txt", CopySource={"Bucket": bucket, "Key": "copy/b.txt"})) == ("InvalidRequest", 400)
s3.copy_object(Bucket=bucket, Key="copy/b.txt", CopySource={"Bucket": bucket, "Key": "copy/b.txt"}, MetadataDirective="REPLACE", Metadata={"colour": "green"}, ContentType="text/x-green")
h = s3.head_object(Bucket=bucket, Key="copy/b.txt")
assert h["Metadata"] == {"colour": "green"} and h["ContentType"] == "text/x-green" and h["ETag"] == f'"{md5(small)}"', h

# Tagging.
s3.put_object_tagging(Bucket=bucket, Key="copy/a.txt", Tagging={"TagSet": [{"Key": "project", "Value": "mountd"}]})
assert s3.get_object_tagging(Bucket=bucket, Key="copy/a.txt")["TagSet"] == [{"Key": "project", "Value": "mountd"}]

# Listing: v2 pages with continuation tokens, delimiter, v1 markers.
for i in range(5):
    s3.put_object(Bucket=bucket, Key=f"list/k{i}", Body=b"x")
pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="list/", PaginationConfig={"PageSize": 2}))
assert [o["Key"] for p in pages for o in p.get("Contents", [])] == [f"list/k{i}" for i in range(5)]
assert len(pages) == 3
top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["copy/", "dir/", "list/", "multi/", "trailer/"], top
v1 = list(s3.get_paginator("list_objects").paginate(Bucket=bucket, Prefix="list/", PaginationConfig={"PageSize": 2}))
assert sum(len(p.get("Contents", [])) for p in v1) == 5
assert all(o["ETag"] == f'"{md5(b"x")}"' for o in pages[0]["Contents"])

# SSE-C: the key is needed to read; a wrong key is 403.
key = os.urandom(32)
s3.put_object(Bucket=bucket, Key="ssec/secret.bin", Body=b"customer data", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
assert error_code(lambda: s3.head_object(Bucket=bucket, Key="ssec/secret.bin"))[1] == 400
assert error_code(lambda: s3.get_object(Bucket=bucket, Key="ssec/secret.bin", SSECustomerAlgorithm="AES256", SSECustomerKey=os.urandom(32))) == ("AccessDenied", 403)
o = s3.get_object(Bucket=bucket, Key="ssec/secret.bin", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
assert o["Body"].read() == b"customer data" and o["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(key).digest()).decode()

# Presigned GET and PUT (SigV4: boto3 presigns with SigV2 unless told, which the server refuses).
presigner = client(signature_version="s3v4")
url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "dir/small.txt"}, ExpiresIn=60)
assert urllib.request.urlopen(url).read() == small
url = presigner.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "dir/presigned.txt"}, ExpiresIn=60)
urllib.request.urlopen(urllib.request.Request(url, data=b"via presigned put", method="PUT")).read()
assert s3.get_object(Bucket=bucket, Key="dir/presigned.txt")["Body"].read() == b"via presigned put"

# Deletes.
r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"list/k{i}"} for i in range(5)] + [{"Key": "list/missing"}]})
assert len(r["Deleted"]) == 6 and "Errors" not in r, r
s3.delete_object(Bucket=bucket, Key="dir/small.txt")
assert error_code(lambda: s3.head_object(Bucket=bucket, Key="dir/small.txt"))[1] == 404
assert error_code(lambda: s3.get_object(Bucket=bucket, Key="dir/small.txt")) == ("NoSuchKey", 404)

# Emptying a bucket the way boto3's documentation does it, through its versions (each object is
# its one version "null"); then the bucket can go. ACLs read as the owner's full control.
assert s3.get_bucket_acl(Bucket=bucket)["Grants"][0]["Permission"] == "FULL_CONTROL"
assert error_code(lambda: s3.get_bucket_policy(Bucket=bucket)) == ("NoSuchBucketPolicy", 404)
resource = boto3.resource("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="mountdadmin",
                          aws_secret_access_key="mountdadmin", config=Config(s3={"addressing_style": "path"}))
versions = [(v.object_key, v.id) for v in resource.Bucket(bucket).object_versions.all()]
assert versions and all(vid == "null" for _, vid in versions), versions
resource.Bucket(bucket).object_versions.delete()
assert list(resource.Bucket(bucket).objects.all()) == []
s3.delete_bucket(Bucket=bucket)
assert error_code(lambda: s3.head_bucket(Bucket=bucket))[1] == 404
print("OK")
