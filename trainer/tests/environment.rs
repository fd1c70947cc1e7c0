//! ONNX Runtime's environment is loaded once per process, even when many threads ask for it
//! first at the same moment (as parallel tests do).

use std::sync::Barrier;

use ort::memory::AllocationDevice;
use ort::value::Tensor;
use unpersonal_trainer::engine::environment;

#[test]
fn racing_first_loads_leave_the_shared_environment_active() {
    let threads = 8;
    let barrier = Barrier::new(threads);
    let envs: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    environment(None).unwrap() as *const _ as usize
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(envs.iter().all(|&e| e == envs[0]), "threads got different environments");
    // Copying a tensor needs ONNX Runtime's active environment: it is gone when the
    // environment made active was a racing twin that got dropped.
    let tensor = Tensor::from_array(([3usize], vec![1f32, 2.0, 3.0])).unwrap();
    let copy = tensor
        .to(AllocationDevice::CPU, 0)
        .expect("the shared environment is ONNX Runtime's active one");
    assert_eq!(copy.extract_tensor().1, [1.0, 2.0, 3.0]);
}
