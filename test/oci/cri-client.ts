// A CRI client that makes kubelet's calls on a container engine's gRPC socket (runtime.v1), so that the tests walk
// the Kubernetes path — RuntimeClass handler, pod annotations, pod sandbox, containers, exec — without a cluster.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { projectFile } from '../../src/sys/project-paths.js';

type Message = Record<string, unknown>;
type Unary = (request: Message, metadata: grpc.Metadata, options: grpc.CallOptions, done: (error: grpc.ServiceError | null, response: Message) => void) => void;

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  log_directory: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  /** Host network: the engine sets up no CNI network for the pod. */
  linux: { security_context: { namespace_options: { network: 'NODE' | 'POD' } } };
}

export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command: string[];
  args?: string[];
  envs?: { key: string; value: string }[];
  annotations?: Record<string, string>;
  log_path: string;
}

export interface ContainerStatus {
  id: string;
  state: 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
  exit_code: number;
  reason: string;
  message: string;
}

export interface ExecSyncResult {
  stdout: Buffer;
  stderr: Buffer;
  exit_code: number;
}

export class CriClient {
  private readonly runtime: grpc.Client & Record<string, Unary>;

  constructor(socketPath: string) {
    const definition = protoLoader.loadSync(projectFile('test', 'oci', 'cri-runtime-v1.proto'), {
      keepCase: true,
      enums: String,
      longs: Number,
      defaults: true,
    });
    const v1 = (grpc.loadPackageDefinition(definition).runtime as grpc.GrpcObject).v1 as grpc.GrpcObject;
    const Service = v1.RuntimeService as grpc.ServiceClientConstructor;
    this.runtime = new Service(`unix://${socketPath}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Unary>;
  }

  close(): void {
    this.runtime.close();
  }

  /** One unary call; a gRPC error becomes an Error carrying the engine's message. */
  private call<T>(method: string, request: Message, timeoutMs = 300_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const fn = this.runtime[method];
      if (fn === undefined) throw new Error(`no CRI method ${method}`);
      fn.call(this.runtime, request, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (error, response) => {
        if (error) reject(new Error(`CRI ${method}: ${error.details || error.message}`));
        else resolve(response as T);
      });
    });
  }

  async version(): Promise<{ runtime_name: string; runtime_api_version: string }> {
    return this.call('Version', { version: 'v1' }, 5_000);
  }

  async runPodSandbox(config: PodSandboxConfig, runtimeHandler: string): Promise<string> {
    const r = await this.call<{ pod_sandbox_id: string }>('RunPodSandbox', { config, runtime_handler: runtimeHandler });
    return r.pod_sandbox_id;
  }

  async podSandboxState(id: string): Promise<{ state: string; runtime_handler: string }> {
    const r = await this.call<{ status: { state: string; runtime_handler: string } }>('PodSandboxStatus', { pod_sandbox_id: id });
    return r.status;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call('StopPodSandbox', { pod_sandbox_id: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call('RemovePodSandbox', { pod_sandbox_id: id });
  }

  async createContainer(podSandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig): Promise<string> {
    const r = await this.call<{ container_id: string }>('CreateContainer', { pod_sandbox_id: podSandboxId, config, sandbox_config: sandboxConfig });
    return r.container_id;
  }

  async startContainer(id: string): Promise<void> {
    await this.call('StartContainer', { container_id: id });
  }

  async containerStatus(id: string): Promise<ContainerStatus> {
    const r = await this.call<{ status: ContainerStatus }>('ContainerStatus', { container_id: id });
    return r.status;
  }

  /** kubelet's stop: SIGTERM, and SIGKILL after `timeoutSeconds`. */
  async stopContainer(id: string, timeoutSeconds: number): Promise<void> {
    await this.call('StopContainer', { container_id: id, timeout: timeoutSeconds });
  }

  async removeContainer(id: string): Promise<void> {
    await this.call('RemoveContainer', { container_id: id });
  }

  async execSync(id: string, cmd: string[], timeoutSeconds: number): Promise<ExecSyncResult> {
    return this.call('ExecSync', { container_id: id, cmd, timeout: timeoutSeconds }, (timeoutSeconds + 60) * 1000);
  }
}
