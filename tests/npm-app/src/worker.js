// A module worker of the same app: chunkwise imported and initialised there too.
import init, { Upload } from "chunkwise";

self.onmessage = async ({ data }) => {
  try {
    await init();
    const result = await new Upload(data.file, { endpoint: data.endpoint }).start();
    self.postMessage({ result });
  } catch (error) {
    self.postMessage({ error: { name: error.name, code: error.code, message: error.message } });
  }
};
