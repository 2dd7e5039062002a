"""A1111's UniPC (modules/models/diffusion/uni_pc/uni_pc.py, as A1111 1.10 calls it from
sd_samplers_timesteps_impl.unipc: multistep, B(h) variant 'bh1', predict_x0, order 3,
skip_type 'time_uniform', lower_order_final), re-written for the reference data; imported by
sampling_reference.py. Only the code path A1111's defaults take is kept."""

import torch


class NoiseScheduleVP:
    """The 'discrete' schedule: log(alpha_t) interpolated piecewise-linearly at t_i = (i+1)/N."""

    def __init__(self, alphas_cumprod):
        log_alphas = 0.5 * torch.log(alphas_cumprod)
        self.total_N = len(log_alphas)
        self.T = 1.
        self.t_array = torch.linspace(0., 1., self.total_N + 1)[1:].reshape((1, -1))
        self.log_alpha_array = log_alphas.reshape((1, -1,))

    def marginal_log_mean_coeff(self, t):
        return interpolate_fn(t.reshape((-1, 1)), self.t_array, self.log_alpha_array).reshape((-1))

    def marginal_alpha(self, t):
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t):
        return torch.sqrt(1. - torch.exp(2. * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t):
        log_mean_coeff = self.marginal_log_mean_coeff(t)
        log_std = 0.5 * torch.log(1. - torch.exp(2. * log_mean_coeff))
        return log_mean_coeff - log_std


def interpolate_fn(x, xp, yp):
    N, K = x.shape[0], xp.shape[1]
    all_x = torch.cat([x.unsqueeze(2), xp.unsqueeze(0).repeat((N, 1, 1))], dim=2)
    sorted_all_x, x_indices = torch.sort(all_x, dim=2)
    x_idx = torch.argmin(x_indices, dim=2)
    cand_start_idx = x_idx - 1
    start_idx = torch.where(torch.eq(x_idx, 0), torch.tensor(1),
                            torch.where(torch.eq(x_idx, K), torch.tensor(K - 2), cand_start_idx))
    end_idx = torch.where(torch.eq(start_idx, cand_start_idx), start_idx + 2, start_idx + 1)
    start_x = torch.gather(sorted_all_x, dim=2, index=start_idx.unsqueeze(2)).squeeze(2)
    end_x = torch.gather(sorted_all_x, dim=2, index=end_idx.unsqueeze(2)).squeeze(2)
    start_idx2 = torch.where(torch.eq(x_idx, 0), torch.tensor(0),
                             torch.where(torch.eq(x_idx, K), torch.tensor(K - 2), cand_start_idx))
    y_positions_expanded = yp.unsqueeze(0).expand(N, -1, -1)
    start_y = torch.gather(y_positions_expanded, dim=2, index=start_idx2.unsqueeze(2)).squeeze(2)
    end_y = torch.gather(y_positions_expanded, dim=2, index=(start_idx2 + 1).unsqueeze(2)).squeeze(2)
    return start_y + (x - start_x) * (end_y - start_y) / (end_x - start_x)


class UniPC:
    def __init__(self, eps_model, ns):
        self.eps_model = eps_model  # (x, t_input) -> eps, with CFG
        self.ns = ns

    def model_fn(self, x, t):
        t_input = (t - 1. / self.ns.total_N) * 1000.
        noise = self.eps_model(x, t_input)
        alpha_t, sigma_t = self.ns.marginal_alpha(t), self.ns.marginal_std(t)
        return (x - sigma_t[:, None, None, None] * noise) / alpha_t[:, None, None, None]

    def update(self, x, model_prev_list, t_prev_list, t, order, use_corrector=True):
        ns = self.ns
        t_prev_0 = t_prev_list[-1]
        lambda_prev_0 = ns.marginal_lambda(t_prev_0)
        lambda_t = ns.marginal_lambda(t)
        model_prev_0 = model_prev_list[-1]
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        alpha_t = torch.exp(ns.marginal_log_mean_coeff(t))
        h = lambda_t - lambda_prev_0
        rks, D1s = [], []
        for i in range(1, order):
            t_prev_i = t_prev_list[-(i + 1)]
            model_prev_i = model_prev_list[-(i + 1)]
            lambda_prev_i = ns.marginal_lambda(t_prev_i)
            rk = ((lambda_prev_i - lambda_prev_0) / h)[0]
            rks.append(rk)
            D1s.append((model_prev_i - model_prev_0) / rk)
        rks.append(1.)
        rks = torch.tensor(rks)
        R, b = [], []
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        B_h = hh
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / B_h)
            factorial_i *= (i + 1)
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        R = torch.stack(R)
        b = torch.tensor(b)
        use_predictor = len(D1s) > 0
        if len(D1s) > 0:
            D1s = torch.stack(D1s, dim=1)
            rhos_p = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        else:
            D1s = None
        if use_corrector:
            rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(R, b)
        model_t = None
        e = lambda v: v[:, None, None, None] if v.dim() == 1 else v
        x_t_ = e(sigma_t / sigma_prev_0) * x - e(alpha_t * h_phi_1) * model_prev_0
        pred_res = torch.einsum('k,bkchw->bchw', rhos_p.to(D1s.dtype), D1s) if use_predictor else 0
        x_t = x_t_ - e(alpha_t * B_h) * pred_res
        if use_corrector:
            model_t = self.model_fn(x_t, t)
            corr_res = torch.einsum('k,bkchw->bchw', rhos_c[:-1].to(D1s.dtype), D1s) if D1s is not None else 0
            D1_t = (model_t - model_prev_0)
            x_t = x_t_ - e(alpha_t * B_h) * (corr_res + rhos_c[-1] * D1_t)
        return x_t, model_t

    def sample(self, x, steps, order=3, lower_order_final=True):
        t_0 = 1. / self.ns.total_N
        t_T = self.ns.T
        timesteps = torch.linspace(t_T, t_0, steps + 1)
        vec_t = timesteps[0].expand((x.shape[0]))
        model_prev_list = [self.model_fn(x, vec_t)]
        t_prev_list = [vec_t]
        for init_order in range(1, order):
            vec_t = timesteps[init_order].expand(x.shape[0])
            x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, init_order, use_corrector=True)
            if model_x is None:
                model_x = self.model_fn(x, vec_t)
            model_prev_list.append(model_x)
            t_prev_list.append(vec_t)
        for step in range(order, steps + 1):
            vec_t = timesteps[step].expand(x.shape[0])
            step_order = min(order, steps + 1 - step) if lower_order_final else order
            use_corrector = step != steps
            x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, step_order, use_corrector=use_corrector)
            for i in range(order - 1):
                t_prev_list[i] = t_prev_list[i + 1]
                model_prev_list[i] = model_prev_list[i + 1]
            t_prev_list[-1] = vec_t
            if step < steps:
                if model_x is None:
                    model_x = self.model_fn(x, vec_t)
                model_prev_list[-1] = model_x
        return x
