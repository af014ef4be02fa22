#full = affine_map<(d0, d1) -> (d0, d1)>
#red = affine_map<(d0, d1) -> (d0)>
func.func @main(%x: tensor<4096x16384xf32>) -> tensor<4096x16384xf32> {
  %e = tensor.empty() : tensor<4096x16384xf32>
  %y = flow.dispatch.workgroups(%x, %e) : (tensor<4096x16384xf32>, tensor<4096x16384xf32>) -> %e =
    (%in: !iree_tensor_ext.dispatch.tensor<readonly:tensor<4096x16384xf32>>, %out: !iree_tensor_ext.dispatch.tensor<readwrite:tensor<4096x16384xf32>>) {
    %ninf = arith.constant 0xFF800000 : f32
    %zero = arith.constant 0.0 : f32
    %xv = iree_tensor_ext.dispatch.tensor.load %in, offsets = [0, 0], sizes = [4096, 16384], strides = [1, 1] : !iree_tensor_ext.dispatch.tensor<readonly:tensor<4096x16384xf32>> -> tensor<4096x16384xf32>
    %ov = iree_tensor_ext.dispatch.tensor.load %out, offsets = [0, 0], sizes = [4096, 16384], strides = [1, 1] : !iree_tensor_ext.dispatch.tensor<readwrite:tensor<4096x16384xf32>> -> tensor<4096x16384xf32>
    %re = tensor.empty() : tensor<4096xf32>
    %m0 = linalg.fill ins(%ninf : f32) outs(%re : tensor<4096xf32>) -> tensor<4096xf32>
    %m = linalg.generic {indexing_maps = [#full, #red], iterator_types = ["parallel", "reduction"]} ins(%xv : tensor<4096x16384xf32>) outs(%m0 : tensor<4096xf32>) {
    ^bb0(%a: f32, %acc: f32):
      %r = arith.maxnumf %a, %acc : f32
      linalg.yield %r : f32
    } -> tensor<4096xf32>
    %z = linalg.generic {indexing_maps = [#full, #red, #full], iterator_types = ["parallel", "parallel"]} ins(%xv, %m : tensor<4096x16384xf32>, tensor<4096xf32>) outs(%ov : tensor<4096x16384xf32>) {
    ^bb0(%a: f32, %mm: f32, %o: f32):
      %d = arith.subf %a, %mm : f32
      %ex = math.exp %d : f32
      linalg.yield %ex : f32
    } -> tensor<4096x16384xf32>
    iree_tensor_ext.dispatch.tensor.store %z, %out, offsets = [0, 0], sizes = [4096, 16384], strides = [1, 1] : tensor<4096x16384xf32> -> !iree_tensor_ext.dispatch.tensor<readwrite:tensor<4096x16384xf32>>
    %zl = iree_tensor_ext.dispatch.tensor.load %out, offsets = [0, 0], sizes = [4096, 16384], strides = [1, 1] : !iree_tensor_ext.dispatch.tensor<readwrite:tensor<4096x16384xf32>> -> tensor<4096x16384xf32>
    %l0 = linalg.fill ins(%zero : f32) outs(%re : tensor<4096xf32>) -> tensor<4096xf32>
    %l = linalg.generic {indexing_maps = [#full, #red], iterator_types = ["parallel", "reduction"]} ins(%zl : tensor<4096x16384xf32>) outs(%l0 : tensor<4096xf32>) {
    ^bb0(%a: f32, %acc: f32):
      %r = arith.addf %a, %acc : f32
      linalg.yield %r : f32
    } -> tensor<4096xf32>
    %yv = linalg.generic {indexing_maps = [#red, #full], iterator_types = ["parallel", "parallel"]} ins(%l : tensor<4096xf32>) outs(%zl : tensor<4096x16384xf32>) {
    ^bb0(%ll: f32, %zz: f32):
      %r = arith.divf %zz, %ll : f32
      linalg.yield %r : f32
    } -> tensor<4096x16384xf32>
    iree_tensor_ext.dispatch.tensor.store %yv, %out, offsets = [0, 0], sizes = [4096, 16384], strides = [1, 1] : tensor<4096x16384xf32> -> !iree_tensor_ext.dispatch.tensor<readwrite:tensor<4096x16384xf32>>
    flow.return
  }
  return %y : tensor<4096x16384xf32>
}
