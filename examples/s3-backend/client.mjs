// The page side of the recipe: chunkwise's `s3` callbacks as calls to the backend's routes
// (backend.mjs). Pass `s3Callbacks()` as the `s3` option of an Upload or an UploadQueue.
export function s3Callbacks(base = "/s3", init = {}) {
  const call = (name) => async ({ signal, ...body }) => {
    const response = await fetch(`${base}/${name}`, {
      ...init,
      method: "POST",
      headers: { "content-type": "application/json", ...init.headers },
      body: JSON.stringify(body),
      signal,
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(`${name}: ${answer.error?.message ?? response.status}`);
    return answer;
  };
  return {
    createMultipartUpload: call("create"),
    signPart: call("sign"),
    listParts: call("list"),
    completeMultipartUpload: call("complete"),
    abortMultipartUpload: call("abort"),
  };
}
